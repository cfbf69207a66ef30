// Link libfastlsm from the prefix of `python -m fastlsm.capi install --prefix P`
// (FASTLSM_PREFIX=P), with an rpath so the host runs without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=FASTLSM_PREFIX");
    let prefix = std::env::var("FASTLSM_PREFIX")
        .expect("set FASTLSM_PREFIX to the prefix given to `python -m fastlsm.capi install`");
    println!("cargo:rustc-link-search=native={prefix}/lib");
    println!("cargo:rustc-link-lib=dylib=fastlsm");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{prefix}/lib");
}

//! A Rust host of fastlsm's C ABI: hand-written `extern "C"` bindings, no crates.
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

const FASTLSM_OK: c_int = 0;
const FASTLSM_VERSION_MAJOR: c_int = 0; // from fastlsm.h
const FASTLSM_TARGET_INT32: c_int = 1;

#[repr(C)]
struct CrossEntropyOptions {
    struct_size: usize,
    ignore_index: i64,
    label_smoothing: f64,
    z_loss: f64,
    softcap: f64,
    reduction: c_int,
    row_stride: i64,
}

extern "C" {
    fn fastlsm_version_number() -> c_int;
    fn fastlsm_version_string() -> *const c_char;
    fn fastlsm_strerror(status: c_int) -> *const c_char;
    fn fastlsm_last_error() -> *const c_char;
    fn fastlsm_log_softmax_f32(x: *const f32, out: *mut f32, rows: i64, cols: i64) -> c_int;
    fn fastlsm_cross_entropy_default_options() -> CrossEntropyOptions;
    fn fastlsm_cross_entropy_ex_f32(
        logits: *const f32, target: *const std::ffi::c_void, target_type: c_int, rows: i64,
        cols: i64, class_weight: *const f32, token_weight: *const f32, grad_output: *const f32,
        options: *const CrossEntropyOptions, loss: *mut f32, lse: *mut f32, grad: *mut f32,
    ) -> c_int;
}

fn text(p: *const c_char) -> String {
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn check(status: c_int) -> Result<(), String> {
    if status == FASTLSM_OK {
        Ok(())
    } else {
        Err(format!("{}: {}", text(unsafe { fastlsm_strerror(status) }),
                    text(unsafe { fastlsm_last_error() })))
    }
}

fn main() -> Result<(), String> {
    let version = unsafe { fastlsm_version_number() };
    if version / 10000 != FASTLSM_VERSION_MAJOR {
        return Err(format!("libfastlsm {version} has another major version"));
    }
    let opt = unsafe { fastlsm_cross_entropy_default_options() };
    assert_eq!(opt.struct_size, std::mem::size_of::<CrossEntropyOptions>());
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut y = [0.0f32; 4];
    check(unsafe { fastlsm_log_softmax_f32(x.as_ptr(), y.as_mut_ptr(), 1, 4) })?;
    let bits: Vec<String> = y.iter().map(|v| format!("{:08x}", v.to_bits())).collect();
    println!("rust {} {}", text(unsafe { fastlsm_version_string() }), bits.join(" "));
    let target = [2i32];
    let mut loss = 0.0f32;
    check(unsafe {
        fastlsm_cross_entropy_ex_f32(x.as_ptr(), target.as_ptr().cast(), FASTLSM_TARGET_INT32, 1,
                                     4, std::ptr::null(), std::ptr::null(), std::ptr::null(),
                                     &opt, &mut loss, std::ptr::null_mut(),
                                     std::ptr::null_mut())
    })?;
    println!("rust_loss {:08x}", loss.to_bits());
    let bad = [9i32];
    match check(unsafe {
        fastlsm_cross_entropy_ex_f32(x.as_ptr(), bad.as_ptr().cast(), FASTLSM_TARGET_INT32, 1, 4,
                                     std::ptr::null(), std::ptr::null(), std::ptr::null(), &opt,
                                     &mut loss, std::ptr::null_mut(), std::ptr::null_mut())
    }) {
        Ok(()) => println!("rust_error none"),
        Err(e) => println!("rust_error {e}"),
    }
    Ok(())
}

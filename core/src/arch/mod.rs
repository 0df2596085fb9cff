//! The hand-written context switch, one file per architecture. Only x86_64 (SysV) is
//! built and run here; anything else is refused at compile time rather than shipped
//! untested.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
mod x86_64_fp;
#[cfg(target_arch = "x86_64")]
pub use x86_64::AsmSwitch;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64_fp::{FpControl, fp_control, fp_control_differs, set_fp_control};

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "keel-core's fiber context switch exists only for x86_64 (SysV): other architectures are refused until their asm can be built and run on a machine of that kind"
);

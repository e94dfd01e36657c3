//! PID 1: stage 1 (initramfs) and stage 2 (the root file system).

pub mod stage1;
pub mod stage2;

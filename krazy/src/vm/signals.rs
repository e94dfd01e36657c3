//! What `krazy vm run` does when it is told to stop: Ctrl-C (SIGINT) asks
//! the interactive loop to power the VM off; SIGTERM and SIGHUP (and Ctrl-C
//! under `--smoke`) kill QEMU, remove its runtime directory and exit with
//! 128 + the signal number. A panic drops the [`Vm`], which does the same;
//! anything harsher is covered by QEMU's `PR_SET_PDEATHSIG` (krazy-build).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use krazy_build::vm::Vm;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Set by Ctrl-C when it means "power off" (the interactive loop polls it).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether Ctrl-C stops at once, like SIGTERM (`--smoke`).
static CTRL_C_STOPS: AtomicBool = AtomicBool::new(false);
/// The first stopping signal received, 0 while none.
static STOP: AtomicI32 = AtomicI32::new(0);
/// The running VM, once started; the watcher thread stops it.
static VM: Mutex<Option<Weak<Vm>>> = Mutex::new(None);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    if sig == Signal::SIGINT as i32 && !CTRL_C_STOPS.load(Ordering::SeqCst) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    } else {
        let _ = STOP.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP and starts the thread that acts on
/// the stopping ones. QEMU runs in its own process group, so a terminal's
/// Ctrl-C or hangup reaches only krazy, which then decides.
pub fn install(ctrl_c_stops: bool) -> anyhow::Result<()> {
    CTRL_C_STOPS.store(ctrl_c_stops, Ordering::SeqCst);
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only loads and stores atomics, which is
        // async-signal-safe.
        unsafe { sigaction(sig, &act) }.with_context(|| format!("cannot catch {sig}"))?;
    }
    std::thread::Builder::new()
        .name("krazy-signals".into())
        .spawn(watch)
        .context("cannot start the signal watcher thread")?;
    Ok(())
}

/// Hands the started VM to the watcher. A stopping signal that came while
/// QEMU was starting is acted on here.
pub fn register(vm: &Arc<Vm>) {
    let mut slot = VM.lock().unwrap_or_else(|p| p.into_inner());
    *slot = Some(Arc::downgrade(vm));
    let sig = STOP.load(Ordering::SeqCst);
    if sig != 0 {
        stop(vm, sig);
    }
}

/// Whether Ctrl-C asked for a power-off since the last call.
pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Polls for a stopping signal; with a VM registered, stops it and exits.
/// Before that, [`register`] does it; after the VM was dropped, only the
/// exit is left.
fn watch() {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let sig = STOP.load(Ordering::SeqCst);
        if sig == 0 {
            continue;
        }
        let slot = VM.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref().map(Weak::upgrade) {
            Some(Some(vm)) => stop(&vm, sig),
            Some(None) => std::process::exit(128 + sig),
            None => {} // QEMU is starting: register() acts.
        }
    }
}

fn stop(vm: &Vm, sig: i32) -> ! {
    let name = Signal::try_from(sig).map_or("a signal", Signal::as_str);
    eprintln!("krazy: {name}: stopping QEMU");
    let _ = vm.kill_and_clean_up();
    std::process::exit(128 + sig)
}

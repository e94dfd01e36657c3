//! QEMU's QMP control socket: the handshake, one command at a time, and
//! the [`Vm`] methods built on it (power button, reset, quit).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitStatus;
use std::time::Duration;

use super::{Vm, VmError};

/// How long one QMP exchange may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

impl Vm {
    /// Connects to the QMP socket and completes the capabilities handshake.
    pub(super) fn qmp_connect(&self) -> io::Result<(BufReader<UnixStream>, UnixStream)> {
        let s = UnixStream::connect(&self.qmp_socket)?;
        s.set_read_timeout(Some(QMP_TIMEOUT))?;
        s.set_write_timeout(Some(QMP_TIMEOUT))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        let greeting = qmp_read(&mut r)?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a QMP greeting: {greeting}"),
            ));
        }
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        if let Err(reason) = qmp_answer(&mut r)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("qmp_capabilities refused: {reason}"),
            ));
        }
        Ok((r, w))
    }

    /// Runs one QMP command (`execute` with optional `arguments`) and
    /// returns its `return` value. For `quit`, QEMU closing the socket
    /// before answering counts as success.
    pub fn qmp(
        &self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, VmError> {
        let _one_at_a_time = self.qmp_lock.lock().unwrap_or_else(|p| p.into_inner());
        let io_err = |source| VmError::Qmp {
            command: command.to_string(),
            socket: self.qmp_socket.clone(),
            error: source,
        };
        let (mut r, mut w) = self.qmp_connect().map_err(io_err)?;
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        w.write_all(line.as_bytes()).map_err(io_err)?;
        match qmp_answer(&mut r) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(reason)) => Err(VmError::QmpRefused {
                command: command.to_string(),
                reason,
            }),
            Err(e) if command == "quit" && e.kind() == io::ErrorKind::UnexpectedEof => {
                Ok(serde_json::Value::Null)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Presses the virtual power button (QMP `system_powerdown`, an ACPI
    /// event). A guest OS then shuts down and QEMU exits; firmware without
    /// an OS ignores it. Returns once QEMU accepted the command; wait with
    /// [`Vm::wait_exit`].
    pub fn powerdown(&self) -> Result<(), VmError> {
        self.qmp("system_powerdown", None).map(drop)
    }

    /// Resets the machine (QMP `system_reset`), like a reset button. With
    /// `-no-reboot` QEMU exits instead.
    pub fn reset(&self) -> Result<(), VmError> {
        self.qmp("system_reset", None).map(drop)
    }

    /// Ends QEMU at once (QMP `quit`, no guest shutdown) and waits up to
    /// 10 s for it to exit.
    pub fn quit(&self) -> Result<ExitStatus, VmError> {
        if let Some(s) = self.exit_status()? {
            return Ok(s);
        }
        self.qmp("quit", None)?;
        self.wait_exit(Duration::from_secs(10))
    }
}

/// Reads one QMP message (one JSON object per line).
fn qmp_read(r: &mut impl BufRead) -> io::Result<serde_json::Value> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "QEMU closed the QMP socket",
        ));
    }
    serde_json::from_str(&line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad QMP message {:?}: {e}", line.trim_end()),
        )
    })
}

/// Reads messages until a command's answer, skipping events: `Ok(return)`
/// or `Err(error description)`.
fn qmp_answer(r: &mut impl BufRead) -> io::Result<Result<serde_json::Value, String>> {
    loop {
        let v = qmp_read(r)?;
        if let Some(ret) = v.get("return") {
            return Ok(Ok(ret.clone()));
        }
        if let Some(err) = v.get("error") {
            let desc = err
                .get("desc")
                .and_then(|d| d.as_str())
                .map_or_else(|| err.to_string(), str::to_string);
            return Ok(Err(desc));
        }
        // {"event": ...} and anything else: skip.
    }
}

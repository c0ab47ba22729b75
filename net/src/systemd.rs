//! Telling systemd when the member is ready (`Type=notify` units, see
//! `deploy/systemd/keel.service`), as etcd does: `READY=1` on the socket systemd names in
//! `NOTIFY_SOCKET`, once the member serves — its name and client URLs published through the
//! log, which takes a leader and a quorum, so a unit ordered after keel starts only when the
//! cluster can answer. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.

use crate::server_loop::handle::Consistency;
use keel_core::node::query::Serving;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing::{info, warn};

use crate::server_loop::handle::NodeHandle;

/// How often readiness is looked at until it holds.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// Waits until this member serves, then sends `READY=1` to systemd if it asked for it.
/// Runs until then (a member that never gets a quorum never tells systemd it is ready,
/// which is what a unit depending on it needs).
pub async fn notify_ready_once_serving(handle: NodeHandle, member_id: u64, name: String) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    loop {
        let name = name.clone();
        let serving = handle
            .ask(Consistency::Unfenced, Serving { member_id, name })
            .await;
        match serving {
            Ok(true) => break,
            Ok(false) => tokio::time::sleep(READINESS_POLL).await,
            // The server stopped: there is nothing to announce.
            Err(_) => return,
        }
    }
    match notify(&socket, "READY=1") {
        Ok(()) => info!("told systemd the member is ready"),
        Err(error) => warn!(%error, "cannot tell systemd the member is ready"),
    }
}

/// Sends `state` to systemd's notification socket: a path, or an abstract socket when it
/// starts with `@`.
fn notify(socket: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    let path = socket.as_encoded_bytes();
    let sent = match path.strip_prefix(b"@") {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            datagram.send_to_addr(state.as_bytes(), &address)?
        }
        None => datagram.send_to(state.as_bytes(), socket)?,
    };
    if sent != state.len() {
        return Err(io::Error::other("the notification was cut short"));
    }
    Ok(())
}

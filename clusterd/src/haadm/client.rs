//! Connecting `haadm` to clusterd's control socket, with errors that tell the operator what to do.

use proto::control::control_client::ControlClient;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The daemon is local; if it does not accept within this time it is wedged or not there.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket (missing, stale, refused, timed out).
    #[error(
        "cannot reach clusterd at {}: {reason} (is clusterd running? start it with: clusterd --config {} --node {node})",
        socket.display(),
        config.display()
    )]
    Unreachable { socket: PathBuf, reason: String, config: PathBuf, node: String },
    /// The socket exists but we may not talk to it.
    #[error(
        "cannot reach clusterd at {}: permission denied (the control socket is for root only; run haadm as root)",
        socket.display()
    )]
    PermissionDenied { socket: PathBuf },
}

/// What the "start it with" hint should say.
#[derive(Debug, Clone)]
pub struct StartHint {
    pub config: PathBuf,
    pub node: String,
}

fn classify(socket: &Path, err: &io::Error, hint: &StartHint) -> ClientError {
    if err.kind() == io::ErrorKind::PermissionDenied {
        return ClientError::PermissionDenied { socket: socket.to_path_buf() };
    }
    let reason = match err.kind() {
        io::ErrorKind::NotFound => "no such socket".to_string(),
        io::ErrorKind::ConnectionRefused => "connection refused (stale socket?)".to_string(),
        _ => err.to_string(),
    };
    ClientError::Unreachable {
        socket: socket.to_path_buf(),
        reason,
        config: hint.config.clone(),
        node: hint.node.clone(),
    }
}

/// Whether something accepts connections on `socket` right now. Offline verbs use this to refuse
/// touching the disks under a running daemon.
pub fn socket_answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Finds the deepest `io::Error` in an error's source chain (tonic wraps the connector's error).
fn io_error_in_chain<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut found = None;
    while let Some(e) = current {
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            found = Some(io_err);
        }
        current = e.source();
    }
    found
}

/// Opens a gRPC channel over the Unix socket.
///
/// A plain `UnixStream` probe runs first: tonic reports connect failures as a generic transport
/// error, while the probe gives the exact reason (missing, refused, permission) to show the user.
pub async fn connect(socket: &Path, hint: &StartHint) -> Result<ControlClient<Channel>, ClientError> {
    if let Err(err) = std::os::unix::net::UnixStream::connect(socket) {
        return Err(classify(socket, &err, hint));
    }
    let unreachable = |reason: String| ClientError::Unreachable {
        socket: socket.to_path_buf(),
        reason,
        config: hint.config.clone(),
        node: hint.node.clone(),
    };
    let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
        .map_err(|e| unreachable(format!("bad socket path: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    match endpoint.connect().await {
        Ok(channel) => Ok(ControlClient::new(channel)),
        Err(err) => match io_error_in_chain(&err) {
            Some(io_err) => Err(classify(socket, io_err, hint)),
            None => Err(unreachable(err.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint() -> StartHint {
        StartHint { config: PathBuf::from("/etc/ha/ha.yaml"), node: "node1".into() }
    }

    #[tokio::test]
    async fn missing_socket_says_how_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("none.sock");
        let err = connect(&socket, &hint()).await.expect_err("nothing listens");
        let text = err.to_string();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{text}");
        assert!(text.contains(&format!("cannot reach clusterd at {}", socket.display())), "{text}");
        assert!(text.contains("no such socket"), "{text}");
        assert!(text.contains("start it with: clusterd --config /etc/ha/ha.yaml --node node1"), "{text}");
        assert!(!socket_answers(&socket));
    }

    #[tokio::test]
    async fn stale_socket_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
        let err = connect(&socket, &hint()).await.expect_err("listener closed");
        assert!(err.to_string().contains("connection refused"), "{err}");
    }

    #[test]
    fn permission_denied_is_its_own_message() {
        let err = classify(Path::new("/run/x.sock"), &io::Error::from(io::ErrorKind::PermissionDenied), &hint());
        assert!(matches!(err, ClientError::PermissionDenied { .. }));
        assert!(err.to_string().contains("permission denied"), "{err}");
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn listening_socket_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        assert!(socket_answers(&socket));
    }
}

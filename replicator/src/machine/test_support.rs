//! Protocol-core unit tests' common fixture: a node on an established link, no I/O.

use super::node::{Link, Node, NodeParams, Persisted, Stage, Timing};
use super::state::ReplState;
use super::uuids::Uuids;
use crate::meta::activity_log::ActivityLog;
use crate::meta::bitmap::Bitmap;
use crate::meta::superblock::flags;

/// `name` with peer `peer`, `size` bytes (bitmap as given, or clean), Consistent, on an established link
/// (connection 1) of protocol `proto`; `tune` adjusts the parameters first.
pub(crate) fn established_node(name: &str, peer: &str, size: u64, bitmap: Option<Bitmap>, proto: u32, tune: impl FnOnce(&mut NodeParams)) -> Node {
    let mut p = NodeParams {
        node: name.into(),
        peer: Some(peer.into()),
        resource: "r0".into(),
        data_size: size,
        policies: Default::default(),
        secret: None,
        fencing_dont_care: true,
        freeze_io_on_peer_loss: false,
        resync_rate: None,
        verify_rate: None,
        c_min_rate: Some(0),
        resync_control: Default::default(),
        timing: Timing::default(),
        verify_alg: "sha1".into(),
        csums: Default::default(),
        detach_on_io_error: false,
        protocols: crate::wire::frame::PROTOCOLS,
        protocol: Default::default(),
    };
    tune(&mut p);
    let persisted = Persisted { uuids: Uuids { current: 0x1234, ..Default::default() }, flags: flags::CONSISTENT | flags::AL_CLEAN };
    let (mut n, _) = Node::new(p, persisted, bitmap.unwrap_or_else(|| Bitmap::new(size)), ActivityLog::new(257, 8), 1);
    n.link = Some(Link {
        conn: 1,
        stage: Stage::Up,
        my_challenge: [0; 64],
        peer_uuids: None,
        peer_words: Vec::new(),
        peer_discard: false,
        started_ms: 0,
        last_rx_ms: 0,
        ping_sent_ms: None,
        expected_peer_repl: None,
        proto,
        resolve_only: false,
    });
    n.repl = ReplState::Established;
    n
}

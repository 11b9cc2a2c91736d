//! Offline verbs that work on the disks directly: `create-md` and `dump-md`.
//!
//! They must not run under a live clusterd (it owns the metadata and caches the bitmap, so a
//! concurrent writer would be overwritten or, worse, corrupt it); the caller checks the control
//! socket first and these functions only deal with the disks.

use crate::config::{ConfigError, HaConfig, MetaDisk, ResourceConfig};
use replicator::meta::MetaError;
use replicator::meta::layout::MetaLocation;
use replicator::meta::store::{FileDevice, MetaStore, create_md};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Why an offline verb failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("unknown resource `{name}` (configured: {known})")]
    UnknownResource { name: String, known: String },
    #[error("{resource}: cannot open {what} {}: {source}", path.display())]
    Open { resource: String, what: &'static str, path: PathBuf, #[source] source: std::io::Error },
    #[error("{resource}: {source}")]
    Meta { resource: String, #[source] source: MetaError },
    #[error(
        "{resource} is up in clusterd on node {node} (control socket {}); {verb} works on the disks directly: run `haadm down {resource}` (or stop clusterd) first",
        socket.display()
    )]
    DaemonRunning { node: String, socket: PathBuf, verb: &'static str, resource: String },
    #[error("{failed} of {total} resources failed")]
    SomeFailed { failed: usize, total: usize },
}

/// The `meta-disk` setting as the replicator's metadata layer understands it.
pub fn meta_location(meta: &MetaDisk) -> MetaLocation {
    match meta {
        MetaDisk::Internal => MetaLocation::Internal,
        MetaDisk::External { path, index } => MetaLocation::External { path: path.clone(), index: *index },
    }
}

/// Resources named by `RES|all`, in configuration order.
pub fn select_resources<'a>(
    config: &'a HaConfig,
    selector: &str,
) -> Result<Vec<(&'a String, &'a ResourceConfig)>, OfflineError> {
    if selector == "all" {
        return Ok(config.resources.iter().collect());
    }
    match config.resources.get_key_value(selector) {
        Some(entry) => Ok(vec![entry]),
        None => Err(OfflineError::UnknownResource {
            name: selector.to_string(),
            known: config.resources.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn open_err(resource: &str, what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OfflineError {
    let resource = resource.to_string();
    let path = path.to_path_buf();
    move |source| OfflineError::Open { resource, what, path, source }
}

/// Size of a regular file or block device (seeking to the end works for both).
fn device_size(resource: &str, what: &'static str, path: &Path) -> Result<u64, OfflineError> {
    let mut file = File::open(path).map_err(open_err(resource, what, path))?;
    file.seek(SeekFrom::End(0)).map_err(open_err(resource, what, path))
}

/// The metadata device path: the data disk itself for internal metadata.
fn meta_path<'a>(disk: &'a Path, loc: &'a MetaLocation) -> &'a Path {
    match loc {
        MetaLocation::Internal => disk,
        MetaLocation::External { path, .. } => path,
    }
}

/// Writes fresh metadata for one resource on `node`; returns the line to print.
pub fn create_md_one(name: &str, res: &ResourceConfig, node: &str, force: bool) -> Result<String, OfflineError> {
    let on = res.on(node)?;
    let loc = meta_location(&on.meta_disk);
    let data_size = device_size(name, "data disk", &on.disk)?;
    let meta_file = meta_path(&on.disk, &loc);
    let meta = FileDevice::open(meta_file).map_err(|source| OfflineError::Meta { resource: name.to_string(), source })?;
    let sb = create_md(data_size, &meta, &loc, name, res.syncer.al_extents, force)
        .map_err(|source| OfflineError::Meta { resource: name.to_string(), source })?;
    Ok(format!(
        "{name}: metadata written to {} ({} bytes of data, {} MiB)",
        meta_file.display(),
        sb.data_size,
        sb.data_size >> 20
    ))
}

/// `create-md RES|all [--force]`: every selected resource is attempted; failures are reported per
/// resource (on stderr via `report_error`) and summarised in the error.
pub fn create_md_selected(
    config: &HaConfig,
    selector: &str,
    node: &str,
    force: bool,
    out: &mut dyn std::io::Write,
    report_error: &mut dyn FnMut(&OfflineError),
) -> Result<(), OfflineError> {
    let selected = select_resources(config, selector)?;
    let total = selected.len();
    let mut failed = 0;
    for (name, res) in selected {
        match create_md_one(name, res, node, force) {
            Ok(line) => {
                let _ = writeln!(out, "{line}");
            }
            Err(e) => {
                failed += 1;
                report_error(&e);
            }
        }
    }
    if failed == 0 { Ok(()) } else { Err(OfflineError::SomeFailed { failed, total }) }
}

/// `dump-md RES`: the metadata as read (never written), preceded by what `open` would have to
/// repair, so corruption is visible instead of silently used.
pub fn dump_md(config: &HaConfig, name: &str, node: &str) -> Result<String, OfflineError> {
    let selected = select_resources(config, name)?;
    let mut text = String::new();
    for (name, res) in selected {
        let on = res.on(node)?;
        let loc = meta_location(&on.meta_disk);
        let data_size = device_size(name, "data disk", &on.disk)?;
        let meta_file = meta_path(&on.disk, &loc);
        // Read-only: dump-md must never change what it inspects.
        let file = File::open(meta_file).map_err(open_err(name, "metadata device", meta_file))?;
        // issue 15 resize: internal metadata of a grown device is at its last known place (the file
        // clusterd keeps in its state-dir, see `daemon::resources::volume_spec`).
        let last_known = config
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| replicator::engine::meta_locator::read(&n.state_dir.join("meta").join(format!("{name}.sb-offset"))));
        let (store, report) = MetaStore::open_at(Box::new(FileDevice::from_file(file)), data_size, &loc, last_known)
            .map_err(|source| OfflineError::Meta { resource: name.to_string(), source })?;
        for line in report.lines() {
            text.push_str(&format!("warning: {line}\n"));
        }
        text.push_str(&store.dump());
    }
    Ok(text)
}

//! Writing the view out in the legacy layout: on request
//! (`POST /v1/admin/export`) and, with `--export-legacy DIR`, continuously
//! (debounced: one export after each burst of commits).

use crate::bridge::is_bridged;
use coord_engine::hub::Hub;
use coord_engine::writer::{body_key, WriterHandle};
use coord_legacy::{ExportReport, Exporter};
use coord_proto::view::View;
use coord_store::EventLog;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Quiet time after a commit before a continuous export runs.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Reads the committed view, the bodies of its messages and which
/// sessions are bridged (their files are their writers').
async fn gather<L: EventLog>(
    writer: &WriterHandle,
    store: &L,
) -> Result<(View, BTreeMap<(String, String), String>, BTreeSet<String>), String> {
    let (view, bridged) = writer
        .read(|s| {
            let bridged: BTreeSet<String> = s
                .view
                .sessions
                .values()
                .filter(|x| is_bridged(&x.source))
                .map(|x| x.session_id.clone())
                .collect();
            (s.view.clone(), bridged)
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut bodies = BTreeMap::new();
    for (to, inbox) in &view.inboxes {
        for m in inbox {
            if let Some(b) = store
                .attachment(&body_key(to, &m.msg_id))
                .await
                .map_err(|e| e.to_string())?
            {
                bodies.insert(
                    (to.clone(), m.msg_id.clone()),
                    String::from_utf8_lossy(&b).into_owned(),
                );
            }
        }
    }
    Ok((view, bodies, bridged))
}

/// One export of the current view into `exporter`'s root.
///
/// # Errors
/// Reading the view or the store, or writing a file, failed (as text).
pub async fn export_once<L: EventLog>(
    exporter: Exporter,
    writer: &WriterHandle,
    store: &L,
) -> (Exporter, Result<ExportReport, String>) {
    let (view, bodies, bridged) = match gather(writer, store).await {
        Ok(g) => g,
        Err(e) => return (exporter, Err(e)),
    };
    let mut exporter = exporter;
    let joined = tokio::task::spawn_blocking(move || {
        let skip = |s: &str| bridged.contains(s);
        let r = exporter.export(&view, &bodies, &skip);
        (exporter, r)
    })
    .await;
    match joined {
        Ok((ex, r)) => (ex, r.map_err(|e| e.to_string())),
        Err(e) => (Exporter::default(), Err(format!("export task failed: {e}"))),
    }
}

/// Keeps `root` current until shutdown: after each burst of commits, one
/// export.
pub async fn run<L: EventLog + Clone>(
    root: PathBuf,
    writer: WriterHandle,
    store: L,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    observed: Arc<crate::observed::Observed>,
) {
    let mut exporter = Exporter::new(&root);
    let mut head = hub.watch();
    let mut exported_at = 0u64;
    observed.export(|x| x.root = root.display().to_string());
    tracing::info!(root = %root.display(), "exporting the view in the legacy layout");
    loop {
        let (ex, r) = export_once(exporter, &writer, &store).await;
        exporter = ex;
        let now_head = hub.head();
        let covered = now_head.saturating_sub(exported_at);
        exported_at = now_head;
        match &r {
            Ok(rep) => {
                let changed = (rep.written + rep.removed) as u64;
                observed.export(|x| {
                    x.exports += 1;
                    x.batched_from += covered;
                    x.files_changed += changed;
                });
            }
            Err(e) => {
                let msg = e.to_string();
                observed.export(|x| {
                    x.last_error = Some(msg);
                    x.last_error_at = Some(crate::observed::now());
                });
            }
        }
        match r {
            Ok(rep) if rep.written + rep.removed > 0 => {
                tracing::debug!(
                    written = rep.written,
                    removed = rep.removed,
                    "legacy export"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "legacy export failed; retrying after the next commit")
            }
        }
        tokio::select! {
            r = head.changed() => if r.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
        // Let the burst finish.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(DEBOUNCE) => break,
                r = head.changed() => if r.is_err() { return },
            }
        }
    }
}

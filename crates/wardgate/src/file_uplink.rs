//! The `type = "file"` uplink: normalized JSON lines appended to a file or written to stdout.
//! It is the embedded default, so a first run shows readings with no broker at all.
//!
//! A reading is acknowledged to the outbox once its line is written and flushed (and fsynced
//! when configured), so a crash between write and ack repeats lines, never loses them.

use std::path::PathBuf;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use wardgate_config::FileUplinkConfig;
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    Backoff, Health, HealthReporter, MessageClass, OutboxCursor, Shutdown, Uplink, UplinkTask,
};

/// Retry delays after an open or write failure (the workspace's one backoff, full jitter).
const RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);
/// See [`RETRY_MIN`].
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Most readings taken from the outbox per write.
const BATCH: usize = 512;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UplinkLabel {
    uplink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    uplink: String,
    class: &'static str,
}

/// Counters of the file uplinks.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileUplinkMetrics {
    written: Family<ClassLabel, Counter>,
    errors: Family<UplinkLabel, Counter>,
}

impl FileUplinkMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "wardgate_uplink_file_readings",
            "Readings written by file/stdout uplinks",
            m.written.clone(),
        );
        registry.register(
            "wardgate_uplink_file_write_errors",
            "Failed writes of file/stdout uplinks (the batch is retried)",
            m.errors.clone(),
        );
        m
    }
}

/// A configured file uplink, not yet running.
#[derive(Debug)]
pub(crate) struct FileUplink {
    cfg: FileUplinkConfig,
    metrics: FileUplinkMetrics,
    health: HealthReporter,
}

impl FileUplink {
    pub(crate) fn new(
        cfg: FileUplinkConfig,
        metrics: FileUplinkMetrics,
        health: HealthReporter,
    ) -> Self {
        FileUplink {
            cfg,
            metrics,
            health,
        }
    }

    /// Builds the uplink from its section and registers its health check `uplink.<name>`.
    /// Opening the file happens when it runs (and is retried), so building cannot fail.
    pub(crate) fn build(
        cfg: &FileUplinkConfig,
        metrics: FileUplinkMetrics,
        health: &Health,
    ) -> Self {
        let reporter = health.reporter(format!("uplink.{}", cfg.name), ComponentKind::Uplink);
        FileUplink::new(cfg.clone(), metrics, reporter)
    }

    /// Drains the cursor into the file until shutdown.
    pub(crate) async fn run<C: OutboxCursor>(self, mut cursor: C, shutdown: Shutdown) {
        let label = UplinkLabel {
            uplink: self.cfg.name.clone(),
        };
        let stdout = self.cfg.path.as_os_str() == "-";
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            // `sync` is a second handle on the same open file, used for fsync through the
            // type-erased writer.
            let (sink, sync): (Box<dyn AsyncWrite + Send + Unpin>, Option<tokio::fs::File>) =
                if stdout {
                    (Box::new(tokio::io::stdout()), None)
                } else {
                    match open_append(&self.cfg.path, self.cfg.fsync).await {
                        Ok((f, sync)) => (Box::new(f) as Box<dyn AsyncWrite + Send + Unpin>, sync),
                        Err(e) => {
                            self.health
                                .not_ready(format!("cannot open {}: {e}", self.cfg.path.display()));
                            tracing::error!(uplink = %self.cfg.name, path = %self.cfg.path.display(), error = %e, "file uplink cannot open its file");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(backoff.next_delay()) => {}
                            }
                            continue;
                        }
                    }
                };
            let where_to = if stdout {
                "stdout".to_owned()
            } else {
                self.cfg.path.display().to_string()
            };
            self.health.ready(format!("writing to {where_to}"));
            let mut out = BufWriter::with_capacity(64 * 1024, sink);
            let result = self
                .pump(&mut cursor, &mut out, sync.as_ref(), &shutdown, &label)
                .await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.errors.get_or_create(&label).inc();
                    self.health.not_ready(format!("write failed: {e}"));
                    tracing::error!(uplink = %self.cfg.name, error = %e, "file uplink write failed; retrying the batch");
                    cursor.rewind();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    async fn pump<C: OutboxCursor, W: AsyncWrite + Unpin>(
        &self,
        cursor: &mut C,
        out: &mut BufWriter<W>,
        sync: Option<&tokio::fs::File>,
        shutdown: &Shutdown,
        label: &UplinkLabel,
    ) -> std::io::Result<()> {
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                b = cursor.next(BATCH) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::info!(uplink = %self.cfg.name, reason = %e, "file uplink stops: outbox closed");
                    return Ok(());
                }
            };
            let mut seqs = Vec::with_capacity(batch.len());
            let mut per_class = [0u64; MessageClass::ALL.len()];
            for d in &batch {
                out.write_all(&d.json).await?;
                out.write_all(b"\n").await?;
                seqs.push(d.seq);
                if let Some(i) = MessageClass::ALL.iter().position(|c| *c == d.class) {
                    per_class[i] += 1;
                }
            }
            out.flush().await?;
            if let Some(f) = sync {
                f.sync_data().await?;
            }
            for (class, n) in MessageClass::ALL.iter().zip(per_class) {
                if n > 0 {
                    self.metrics
                        .written
                        .get_or_create(&ClassLabel {
                            uplink: label.uplink.clone(),
                            class: class.as_str(),
                        })
                        .inc_by(n);
                }
            }
            cursor.ack(&seqs);
        }
    }
}

/// Opens `path` for appending, plus a second handle for fsync when `fsync` is set.
async fn open_append(
    path: &PathBuf,
    fsync: bool,
) -> std::io::Result<(tokio::fs::File, Option<tokio::fs::File>)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let sync = if fsync {
        Some(f.try_clone().await?)
    } else {
        None
    };
    Ok((f, sync))
}

impl<C: OutboxCursor> Uplink<C> for FileUplink {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn start(self: Box<Self>, cursor: C, shutdown: Shutdown) -> UplinkTask {
        Box::pin(FileUplink::run(*self, cursor, shutdown))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use wardgate_core::health::ComponentKind;
    use wardgate_core::{Delivery, Health, OutboxError};

    use super::*;

    /// Hands out `pending` once, then waits forever; records acks.
    struct OnceCursor {
        pending: Vec<Delivery>,
        acked: Arc<Mutex<Vec<u64>>>,
    }

    impl OutboxCursor for OnceCursor {
        async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, OutboxError> {
            if self.pending.is_empty() {
                std::future::pending::<()>().await;
            }
            let n = max.min(self.pending.len());
            Ok(self.pending.drain(..n).collect())
        }
        fn ack(&mut self, seqs: &[u64]) {
            self.acked.lock().unwrap().extend_from_slice(seqs);
        }
        fn rewind(&mut self) {}
        fn nack(&mut self, _: &[u64], _: wardgate_core::NackReason) {}
        fn release(&mut self, _: &[u64]) {}
    }

    fn delivery(seq: u64, class: MessageClass) -> Delivery {
        Delivery {
            seq,
            id: ulid::Ulid::new(),
            device: "bed-1".into(),
            class,
            json: Bytes::from(format!("{{\"seq\":{seq}}}")),
            attempts: 0,
        }
    }

    #[tokio::test]
    async fn readings_are_appended_as_lines_fsynced_and_acked_after_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/readings.jsonl");
        let mut registry = Registry::default();
        let metrics = FileUplinkMetrics::register(&mut registry);
        let health = Health::new();
        let cfg = FileUplinkConfig {
            name: "archive".into(),
            path: path.clone(),
            fsync: true,
        };
        let up = FileUplink::new(
            cfg,
            metrics,
            health.reporter("uplink.archive", ComponentKind::Uplink),
        );
        let acked = Arc::new(Mutex::new(Vec::new()));
        let cursor = OnceCursor {
            pending: vec![
                delivery(1, MessageClass::Vital),
                delivery(2, MessageClass::Alarm),
                delivery(3, MessageClass::Vital),
            ],
            acked: acked.clone(),
        };
        let stop = Shutdown::new();
        let task = tokio::spawn(up.run(cursor, stop.clone()));
        for _ in 0..200 {
            if acked.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(*acked.lock().unwrap(), vec![1, 2, 3]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n");
        assert!(health.readiness().ready);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains(
                r#"wardgate_uplink_file_readings_total{uplink="archive",class="vital"} 2"#
            ),
            "{out}"
        );
        stop.cancel();
        task.await.unwrap();
    }
}

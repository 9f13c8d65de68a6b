//! Rules, number lists, grid map, stations, roster and cell table changed while running.
//!
//! A reload reads and checks everything a start would (the same loaders, the same errors
//! naming file, line and id), then swaps the whole set at once: each event is scored,
//! located and assigned by one set, never half of each. An invalid change leaves the live set
//! in place, logs why and sets `dissuade_config_last_reload_successful` to 0.
//!
//! What the windows do: when the features (and `[windows]` limits) are the same, the new set
//! takes over the live windows as they are. When they changed, the new set's windows are
//! filled from the input by the processor before it is installed, the way a restart fills
//! them (see [`crate::kafka::window_replay`]): processing pauses for that replay. Changes the
//! by-caller stages cannot follow (turning caller-side windows on or off, editing a
//! caller-side feature) are refused with a message saying a restart applies them.
//!
//! Changes made through the lists topic are kept across a reload
//! ([`crate::pipeline::Pipeline::install`]).
//!
//! The shadow rule file (`rules.shadow`), when shadow rules run, is watched beside them and
//! replaced on its own ([`Reloader::reload_shadow`]).
//!
//! Triggers: a change to one of the files (checked every `rules.watch_interval` by size and
//! modification time, so an editor's save, a `mv` into place and a Kubernetes ConfigMap
//! update are all seen), SIGHUP, [`ReloadHandle::reload`], and a rule file published on the
//! rules topic (`crate::kafka::rules_topic`), which from then on replaces the rules file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{load_parts, LoadError, Pipeline, RefusedChange};
use crate::rules::{RuleSet, RulesError};

#[derive(Debug, Error)]
pub enum ReloadError {
    /// The new files are not a valid set: the live set stays.
    #[error("{0}")]
    Invalid(#[from] LoadError),
    /// Valid, but only a restart can apply it.
    #[error("{0}")]
    Refused(#[from] RefusedChange),
}

impl ReloadError {
    fn result(&self) -> &'static str {
        match self {
            ReloadError::Invalid(_) => "invalid",
            ReloadError::Refused(_) => "refused",
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The new set is live (or, with `windows_rebuilt`, will be once the processor has
    /// filled its windows).
    Applied {
        rules_version: String,
        windows_rebuilt: bool,
    },
    /// The files are byte for byte those of the live set.
    Unchanged,
}

/// The longest a reload waits for the processor to install the previous one.
const REBUILD_WAIT: Duration = Duration::from_secs(300);

/// Size and modification time of each watched file (`None`: missing or unreadable).
type Stamps = Vec<(PathBuf, Option<(u64, SystemTime)>)>;

/// A rule file published on the rules topic.
#[derive(Debug, Clone)]
pub struct Published {
    /// Names it in messages and logs: topic, partition and offset.
    pub origin: String,
    pub text: String,
}

/// Reloads the live set of one pipeline from the files its config names.
pub struct Reloader {
    config: Config,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    stamps: Stamps,
    /// A digest of the bytes of every file the live set was read from.
    digest: u64,
    /// The last valid rule file published on the rules topic: once one has arrived, it is
    /// the rules, and the rules file is no longer read.
    published: Option<Published>,
    /// The shadow rule file (`rules.shadow`) when shadow rules run, with its stamp and the
    /// digest of the bytes the running shadow was read from.
    shadow: Option<(PathBuf, Stamps, u64)>,
}

/// What a look at the shadow rule file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowReloaded {
    /// The new candidate runs from the next event on, its comparison started afresh.
    Replaced { version: String },
    /// The file is not a valid rule file: the running candidate stays.
    Invalid { error: String },
}

/// The rules a service starts on: the latest valid rule file published on the rules topic
/// (`published`, the latest first), else `file_rules`, read from the config's rules file.
pub fn starting_rules(
    config: &Config,
    published: Vec<Published>,
    file_rules: RuleSet,
) -> (RuleSet, Option<Published>) {
    for p in published {
        match read_rules(config, Some(&p)) {
            Ok(rules) => {
                info!(origin = %p.origin, version = rules.version(), "starting on the rules published on the rules topic");
                return (rules, Some(p));
            }
            Err(e) => {
                warn!(error = %e, "rules topic: skipped a published rule file that is not valid")
            }
        }
    }
    (file_rules, None)
}

/// Compiles the published rules, or else the rules file. List files are found beside the
/// rules file either way.
fn read_rules(config: &Config, published: Option<&Published>) -> Result<RuleSet, RulesError> {
    let path = config.resolve(&config.rules.path);
    match published {
        Some(p) => RuleSet::from_toml_str_in(
            &p.text,
            &p.origin,
            path.parent().unwrap_or(std::path::Path::new(".")),
        ),
        None => RuleSet::load(&path),
    }
}

impl Reloader {
    /// `published`: the rule file from the rules topic the pipeline was loaded with, if any.
    pub fn new(
        config: Config,
        pipeline: Arc<Pipeline>,
        metrics: Arc<Metrics>,
        published: Option<Published>,
    ) -> Reloader {
        let files = watched_files(&config, &pipeline.rules(), published.is_some());
        let shadow = config
            .rules
            .shadow
            .as_ref()
            .filter(|_| pipeline.shadow().is_some())
            .map(|path| {
                let file = [config.resolve(path)];
                (file[0].clone(), stamp(&file), digest(&file, None))
            });
        Reloader {
            stamps: stamp(&files),
            digest: digest(&files, published.as_ref()),
            published,
            shadow,
            config,
            pipeline,
            metrics,
        }
    }

    /// Reads the shadow rule file again when it changed (`force`: whatever its stamp says,
    /// as on SIGHUP) and, when its rules are valid, runs them in place of the shadow rules
    /// before; `None` when no shadow rules run or the file is unchanged. The shadow's
    /// windows and open tasks start empty again, as at a start. An invalid candidate is
    /// logged and the one before keeps running: it is the analysts' draft, not the service's
    /// configuration, so it does not touch `dissuade_config_last_reload_successful`.
    pub fn reload_shadow(&mut self, force: bool) -> Option<ShadowReloaded> {
        let (path, stamps, digest_before) = self.shadow.as_mut()?;
        let file = [path.clone()];
        let now = stamp(&file);
        if !force && now == *stamps {
            return None;
        }
        *stamps = now;
        let bytes = digest(&file, None);
        if bytes == *digest_before {
            return None;
        }
        match crate::shadow::Shadow::load(&self.config, &self.pipeline) {
            Ok(Some(shadow)) => {
                *digest_before = bytes;
                let version = shadow.version();
                let before = self.pipeline.shadow().as_ref().map(|s| s.version());
                self.pipeline.set_shadow(shadow);
                self.metrics.shadow_replaced(before.as_deref(), &version);
                info!(version, "shadow rules: the candidate file changed; the new candidate runs, its comparison starts afresh");
                Some(ShadowReloaded::Replaced { version })
            }
            Ok(None) => None,
            Err(e) => {
                *digest_before = bytes;
                warn!(error = %e, "shadow rules: the candidate file is not valid; the candidate before it keeps running");
                Some(ShadowReloaded::Invalid {
                    error: e.to_string(),
                })
            }
        }
    }

    /// Whether a watched file changed since the last look.
    pub fn files_changed(&mut self) -> bool {
        let now = stamp(
            &self
                .stamps
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<Vec<_>>(),
        );
        if now == self.stamps {
            return false;
        }
        self.stamps = now;
        true
    }

    /// Reads the files again and, when they make a valid set, makes it live. Counted in
    /// `dissuade_config_reloads_total` and logged.
    pub fn reload(&mut self, trigger: &str) -> Result<Reloaded, ReloadError> {
        // A set whose windows the processor is still filling is installed first: the next
        // one is checked against it. A processor that never takes it (stopped) must not
        // block reloads for ever: the waiting set is then replaced.
        let waited = std::time::Instant::now();
        while self.pipeline.rebuild_pending() {
            if waited.elapsed() > REBUILD_WAIT && self.pipeline.withdraw_pending() {
                warn!("reload: the previous change was still waiting for the processor; replaced");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let result = self.try_reload();
        match &result {
            Ok(Reloaded::Unchanged) => {
                self.metrics.reload("unchanged");
                info!(trigger, "reload: nothing changed");
            }
            Ok(Reloaded::Applied {
                rules_version,
                windows_rebuilt,
            }) => {
                self.metrics.reload("applied");
                if *windows_rebuilt {
                    info!(
                        trigger,
                        rules_version,
                        "reload: valid; the features changed, so the processor fills the new windows from the input, then applies it"
                    );
                } else {
                    info!(trigger, rules_version, "reload: applied, windows kept");
                }
            }
            Err(e) => {
                self.metrics.reload(e.result());
                warn!(trigger, error = %e, "reload: not applied; the live set stays");
            }
        }
        result
    }

    /// Takes a rule file published on the rules topic as the rules from now on, and reloads.
    /// An invalid one is refused like an invalid file: the rules before it stay.
    pub fn publish(&mut self, published: Published) -> Result<Reloaded, ReloadError> {
        let trigger = format!("rules topic ({})", published.origin);
        let before = self.published.replace(published);
        let result = self.reload(&trigger);
        if result.is_err() {
            self.published = before;
        }
        result
    }

    fn try_reload(&mut self) -> Result<Reloaded, ReloadError> {
        let rules = read_rules(&self.config, self.published.as_ref()).map_err(LoadError::from)?;
        let files = watched_files(&self.config, &rules, self.published.is_some());
        let digest = digest(&files, self.published.as_ref());
        if digest == self.digest {
            return Ok(Reloaded::Unchanged);
        }
        let (rules, grid, cells, warnings) = load_parts(&self.config, rules)?;
        for w in &warnings {
            warn!(warning = %w, "reload: grid map repaired on load");
        }
        let rules_version = rules.version().to_owned();
        let candidate = self.pipeline.prepare(rules, grid, cells)?;
        let windows_rebuilt = candidate.rebuild_windows;
        if self.pipeline.offer(candidate) {
            self.metrics.live_changed(&self.pipeline.live());
        }
        self.digest = digest;
        self.stamps = stamp(&files);
        Ok(Reloaded::Applied {
            rules_version,
            windows_rebuilt,
        })
    }
}

/// Every file a set is read from: the rules file (unless the rules were published), its list
/// files, the grid map, stations, roster and cell table.
fn watched_files(config: &Config, rules: &RuleSet, published: bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if !published {
        files.push(config.resolve(&config.rules.path));
    }
    files.extend(rules.lists().iter().map(|l| l.file.clone()));
    files.extend(
        [
            &config.grid.cells,
            &config.grid.stations,
            &config.grid.roster,
        ]
        .into_iter()
        .chain(config.grid.cell_table.as_ref())
        .map(|p| config.resolve(p)),
    );
    files
}

fn stamp(files: &[PathBuf]) -> Stamps {
    files
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok();
            let stamp = meta.and_then(|m| Some((m.len(), m.modified().ok()?)));
            (p.clone(), stamp)
        })
        .collect()
}

fn digest(files: &[PathBuf], published: Option<&Published>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    if let Some(p) = published {
        hasher.update(p.text.as_bytes());
    }
    for p in files {
        hasher.update(p.as_os_str().as_encoded_bytes());
        match std::fs::read(p) {
            Ok(bytes) => hasher.update(&bytes),
            Err(_) => hasher.update(b"\0unreadable"),
        }
    }
    hasher.digest()
}

type Reply = oneshot::Sender<Result<Reloaded, String>>;

enum Request {
    Reload(Reply),
    Publish(Published, Option<Reply>),
}

/// Asks the running reloader for a reload, and hears what it did.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Request>,
}

const STOPPED: &str = "the reloader has stopped";

impl ReloadHandle {
    /// Reloads now (as SIGHUP does) and returns the result; the error says why the live set
    /// stayed.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Reload(tx))
            .await
            .map_err(|_| STOPPED.to_string())?;
        rx.await.map_err(|_| STOPPED.to_string())?
    }

    /// Hands over a rule file from the rules topic, from a thread outside the runtime, and
    /// waits for the reload; false once the reloader has stopped. The result is logged and
    /// counted.
    pub fn publish_blocking(&self, published: Published) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx
            .blocking_send(Request::Publish(published, Some(tx)))
            .is_ok()
            && rx.blocking_recv().is_ok()
    }
}

/// Runs `reloader` until `shutdown`: on SIGHUP, on [`ReloadHandle::reload`], and when a
/// watched file changes (every `rules.watch_interval`, unless zero).
pub fn spawn(reloader: Reloader, shutdown: CancellationToken) -> ReloadHandle {
    let (tx, mut rx) = mpsc::channel::<Request>(4);
    let interval = reloader.config.rules.watch_interval;
    let reloader = Arc::new(Mutex::new(reloader));
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "reload: no SIGHUP handler; file changes still reload");
                None
            }
        };
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let run = |trigger: &'static str, check_files: bool, published: Option<Published>| {
            let reloader = reloader.clone();
            tokio::task::spawn_blocking(move || {
                let mut r = reloader.lock().expect("reloader lock");
                if let Some(p) = published {
                    return Some(r.publish(p).map_err(|e| e.to_string()));
                }
                r.reload_shadow(!check_files);
                if check_files && !r.files_changed() {
                    return None;
                }
                Some(r.reload(trigger).map_err(|e| e.to_string()))
            })
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(request) = rx.recv() => {
                    let (published, reply) = match request {
                        Request::Reload(reply) => (None, Some(reply)),
                        Request::Publish(p, reply) => (Some(p), reply),
                    };
                    let result = run("request", false, published).await.ok().flatten();
                    if let Some(reply) = reply {
                        let _ = reply.send(result.unwrap_or_else(|| Err("the reload panicked".into())));
                    }
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = run("SIGHUP", false, None).await;
                }
                _ = tick.tick(), if !interval.is_zero() => {
                    let _ = run("file change", true, None).await;
                }
            }
        }
    });
    ReloadHandle { tx }
}

//! `dissuade demo`: the embedded broker, the service, synthetic traffic and, by default,
//! simulated officers who answer the tasks ([`officers`]), with a live summary.

mod officers;
mod plan;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::generate::{generate, GenerateCounters, GenerateOptions};
use crate::kafka::producer_config;
use crate::metrics::{Metrics, FEEDBACK_REJECTED_REASONS};
use crate::service::Service;
use crate::synth::{Synth, SynthConfig};
use officers::OfficerCounters;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Synthetic events per second.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Send this many events, wait until all are processed, print totals and exit.
    #[arg(long)]
    events: Option<u64>,
    /// Stop generating after this long (default 10m when --events is not given).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed of the victim population and event mix.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Share of deliberately invalid records, to show the dead-letter path.
    #[arg(long, default_value_t = 0.002)]
    bad_share: f64,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 2)]
    every: u64,
    /// Do not simulate the officers: tasks get no feedback (they all go overdue).
    #[arg(long)]
    no_officers: bool,
    /// Multiply every `dispatch.sla.*` and `lifecycle.second_escalation_after` by F, so
    /// that overdue tasks and escalations happen within a short demo. With 0.02 a critical
    /// task is due after 12 s, a high one after 36 s, and tier 2 follows 72 s after the
    /// deadline: `--duration 2m --sla-scale 0.02` shows both tiers of escalation.
    #[arg(long, value_name = "F", value_parser = sla_scale)]
    sla_scale: Option<f64>,
}

fn sla_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("`{s}` is not a positive factor, e.g. 0.05")),
    }
}

/// Sign-in tokens for this run only, when the config has none: the centre, and the desk and
/// community officer of the cell with the most base stations (the synthetic callees live
/// around base stations, so that officer gets tasks), or of the station with the most cells
/// when there is no cell table.
fn demo_tokens(config: &mut Config) -> anyhow::Result<Vec<(String, String)>> {
    let (grid, _) = crate::pipeline::load_grid(config).context("loading the grid map")?;
    let mut per_cell = vec![0usize; grid.cells().len()];
    if let Some(table) = &config.grid.cell_table {
        let table = crate::grid::cell_table::CellTable::load(&config.resolve(table))
            .context("loading the cell table")?;
        for (_, (lon, lat)) in table.iter() {
            if let Some(c) = grid.locate(lon, lat).cell {
                per_cell[c] += 1;
            }
        }
    }
    let mut per_station = vec![0usize; grid.stations().len()];
    for c in grid.cells() {
        per_station[c.station] += 1;
    }
    // The hottest cell with a community officer; ties (and no cell table) go to the station
    // with the most cells.
    let cell = (0..grid.cells().len())
        .filter(|&c| grid.community_officer(c).is_some())
        .max_by_key(|&c| (per_cell[c], per_station[grid.cells()[c].station]));
    let mut out = Vec::new();
    let mut add = |scope: &str, id: Option<String>, who: String| {
        let (token, sha256) = crate::web::auth::new_token();
        config.web.tokens.push(crate::config::WebToken {
            scope: scope.into(),
            id,
            sha256,
        });
        out.push((who, token));
    };
    add("centre", None, "centre (everything)".into());
    if let Some(c) = cell {
        let st = grid.station_of(c);
        add(
            "station",
            Some(st.station_id.clone()),
            format!("station desk {} {}", st.station_id, st.name),
        );
        let o = grid.community_officer(c).expect("filtered on it");
        add(
            "officer",
            Some(o.officer_id.clone()),
            format!("officer {} {}", o.officer_id, o.name),
        );
    }
    Ok(out)
}

/// Shortens (or lengthens) the deadlines and the tier-2 interval by `f`.
fn scale_slas(config: &mut Config, f: f64) {
    let sla = &mut config.dispatch.sla;
    for d in [
        &mut sla.low,
        &mut sla.medium,
        &mut sla.high,
        &mut sla.critical,
        &mut config.lifecycle.second_escalation_after,
    ] {
        // At least a millisecond: the config's rule that durations are longer than zero.
        *d = d.mul_f64(f).max(Duration::from_millis(1));
    }
}

pub fn run(mut config: Config, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(f) = args.sla_scale {
        scale_slas(&mut config, f);
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(demo(config, args))
}

async fn demo(mut config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let sign_in = if !config.web.listen.is_empty() && config.web.tokens.is_empty() {
        demo_tokens(&mut config)?
    } else {
        Vec::new()
    };
    let service = Service::start(&config, true, shutdown.clone())
        .await
        .context("starting the service")?;
    tokio::spawn(super::run::stop_on_signal(shutdown.clone()));
    let k = &config.kafka;
    eprintln!(
        "dissuade demo: broker {} (any Kafka client can connect, e.g. \
         `kcat -b {} -C -t {}`), metrics {}",
        service.bootstrap,
        service.bootstrap,
        k.task_topic,
        service
            .metrics_addr
            .map_or("off".to_string(), |a| format!("http://{a}/metrics")),
    );
    if let Some(addr) = service.web_addr {
        eprintln!("desk and officer views: http://{addr}/ (sign in with a token)");
        for (who, token) in &sign_in {
            eprintln!("  {token}  {who}");
        }
    }
    eprintln!(
        "generating {} at {} events/s; Ctrl-C stops",
        match (args.events, args.duration) {
            (Some(n), _) => format!("{n} events"),
            (None, Some(d)) => format!("for {}", humantime::format_duration(d)),
            (None, None) => "for 10m".into(),
        },
        args.rate
    );

    if let Some(f) = args.sla_scale {
        let d = &config.dispatch.sla;
        let h =
            |d: Duration| humantime::format_duration(Duration::from_millis(d.as_millis() as u64));
        eprintln!(
            "SLAs scaled by {f}: critical {}, high {}, medium {}, low {}; tier 2 escalation {} \
             after the deadline",
            h(d.critical),
            h(d.high),
            h(d.medium),
            h(d.low),
            h(config.lifecycle.second_escalation_after),
        );
    }
    let officers = if args.no_officers {
        None
    } else if !config.lifecycle.enabled {
        eprintln!(
            "lifecycle.enabled is false: no simulated officers (nothing would read their feedback)"
        );
        None
    } else {
        let o = officers::spawn(&config, &service.bootstrap, args.seed, shutdown.clone())
            .context("starting the simulated officers")?;
        eprintln!(
            "simulated officers answer tasks on `{}` with feedback on `{}` (--no-officers: off)",
            k.task_topic, k.feedback_topic
        );
        Some(o)
    };
    let officer_counters = officers.as_ref().map(|o| o.counters.clone());
    let show_loop = config.lifecycle.enabled;

    let cells = service.pipeline.cell_table();
    let synth = Synth::new(
        &cells,
        SynthConfig {
            seed: args.seed,
            bad_share: args.bad_share,
            ..SynthConfig::default()
        },
    );
    let opts = GenerateOptions {
        topic: k.input_topic.clone(),
        events: args.events,
        rate: Some(args.rate),
        duration: args
            .duration
            .or(args.events.is_none().then(|| Duration::from_secs(600))),
        progress: false,
    };
    let counters = Arc::new(GenerateCounters::default());
    let producer = producer_config(k, &service.bootstrap);
    let gen_counters = counters.clone();
    let gen_stop = shutdown.clone();
    let generator = tokio::task::spawn_blocking(move || {
        generate(&producer, synth, &opts, gen_counters, &gen_stop)
    });

    let metrics = service.metrics.clone();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    ticker.tick().await;
    let mut last = (Instant::now(), 0u64);
    let mut generated: Option<u64> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                let consumed = metrics.events_consumed.get();
                let rate = (consumed - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, consumed);
                eprintln!("{}", summary_line(&metrics, started.elapsed(), rate));
                if show_loop {
                    eprintln!("{}", LoopFigures::read(&metrics, officer_counters.as_deref()).line());
                }
            }
            _ = shutdown.cancelled() => break,
        }
        if generated.is_none() && generator.is_finished() {
            generated = Some(counters.delivered.load(Ordering::Relaxed));
        }
        // With --events the demo ends by itself once every event is processed and delivered.
        if let (Some(n), Some(_)) = (generated, args.events) {
            if metrics.events_consumed.get() >= n && metrics.in_flight.get() == 0 {
                break;
            }
        }
        if args.events.is_none() && generated.is_some() {
            break;
        }
    }
    let at_stop = LoopFigures::read(&metrics, officer_counters.as_deref());
    shutdown.cancel();
    let report = generator.await.context("generator task")?;
    if let Some(o) = officers {
        let _ = tokio::task::spawn_blocking(move || o.join()).await;
    }
    let result = service.wait().await;
    eprintln!("{}", summary_line(&metrics, started.elapsed(), 0.0));
    let figures = LoopFigures::read(&metrics, officer_counters.as_deref()).with_gauges_of(&at_stop);
    if show_loop {
        eprintln!("{}", figures.line());
    }
    let mut out = super::stdout();
    let printed = print_totals(&mut out, &metrics, report.ok().map(|r| r.sent))
        .and_then(|()| {
            if show_loop {
                figures.print_totals(&mut out, &metrics)
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    result?;
    printed?;
    Ok(ExitCode::SUCCESS)
}

fn summary_line(m: &Metrics, elapsed: Duration, rate: f64) -> String {
    let [_, low, medium, high, critical] = m.tasks_by_level();
    let ([_, p99, _], n) = m.recent_end_to_end_quantiles();
    format!(
        "[{:>5}s] {:>7.0} ev/s | consumed {:>9} | tasks {:>7} (critical {}, high {}, medium {}, low {}) \
         | upgrades {} | suppressed {} | dead letters {} | lag {} | e2e p99 (last {}s) {}",
        elapsed.as_secs(),
        rate,
        m.events_consumed.get(),
        low + medium + high + critical,
        critical,
        high,
        medium,
        low,
        m.upgrades.get(),
        m.suppressed(),
        m.dead_letters(),
        m.total_lag(),
        crate::metrics::RECENT.as_secs(),
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.1} ms", p99 as f64 / 1000.0)
        }
    )
}

fn print_totals(out: &mut impl Write, m: &Metrics, sent: Option<u64>) -> std::io::Result<()> {
    let [_, low, medium, high, critical] = m.tasks_by_level();
    let ([p50, p99, p999], _) = m.end_to_end_quantiles();
    writeln!(
        out,
        "events sent        {}",
        sent.map_or("?".into(), |s| s.to_string())
    )?;
    writeln!(out, "events consumed    {}", m.events_consumed.get())?;
    writeln!(
        out,
        "tasks              {} (critical {critical}, high {high}, medium {medium}, low {low}), {} upgrades",
        low + medium + high + critical,
        m.upgrades.get()
    )?;
    writeln!(out, "tasks delivered    {}", m.tasks_delivered.get())?;
    writeln!(out, "suppressed         {}", m.suppressed())?;
    writeln!(out, "dead letters       {}", m.dead_letters())?;
    writeln!(
        out,
        "end-to-end         p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        p999 as f64 / 1000.0
    )?;
    Ok(())
}

/// The second half of the loop as the demo shows it.
struct LoopFigures {
    /// Feedback records the simulated officers got delivered; `None` with `--no-officers`.
    written: Option<u64>,
    not_delivered: u64,
    reached: u64,
    open: i64,
    acknowledged: i64,
    overdue: i64,
    escalated: [u64; 2],
    rejected: Vec<(&'static str, u64)>,
}

impl LoopFigures {
    fn read(m: &Metrics, officers: Option<&OfficerCounters>) -> LoopFigures {
        let l = &m.lifecycle;
        let gauge = |status: &str| l.tasks.with_label_values(&[status]).get();
        LoopFigures {
            written: officers.map(|o| o.written.load(Ordering::Relaxed)),
            not_delivered: officers.map_or(0, |o| o.failed.load(Ordering::Relaxed)),
            reached: l.people_reached(),
            open: gauge("open"),
            acknowledged: gauge("acknowledged"),
            overdue: gauge("overdue"),
            escalated: [l.escalations(1), l.escalations(2)],
            rejected: FEEDBACK_REJECTED_REASONS
                .iter()
                .map(|r| (*r, l.rejected(r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// The counters as they end, the gauges as they were at `stop`: a stopping lifecycle
    /// gives its partitions up, and its gauges fall to zero.
    fn with_gauges_of(self, stop: &LoopFigures) -> LoopFigures {
        LoopFigures {
            open: stop.open,
            acknowledged: stop.acknowledged,
            overdue: stop.overdue,
            ..self
        }
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// The line under the pipeline's line.
    fn line(&self) -> String {
        format!(
            "        loop | feedback {:>8} | reached {:>7} | open {:>6} | overdue {:>5} \
             | escalated {} (centre {}) | feedback rejected {}",
            self.written.map_or("off".to_string(), |n| n.to_string()),
            self.reached,
            self.open + self.acknowledged,
            self.overdue,
            self.escalated[0] + self.escalated[1],
            self.escalated[1],
            self.rejected_total(),
        )
    }

    fn print_totals(&self, out: &mut impl Write, m: &Metrics) -> std::io::Result<()> {
        let [_, low, medium, high, critical] = m.tasks_by_level();
        // Reach rate as the centre reports it: people reached over tasks pushed, an upgrade
        // being the same person's task raised, not a new push.
        let pushed = (low + medium + high + critical).saturating_sub(m.upgrades.get());
        match self.written {
            Some(n) => writeln!(
                out,
                "feedback written   {n} by the simulated officers and desks{}",
                match self.not_delivered {
                    0 => String::new(),
                    n => format!(", {n} not delivered"),
                }
            )?,
            None => writeln!(out, "feedback written   0 (--no-officers)")?,
        }
        writeln!(
            out,
            "people reached     {} ({:.1}% of {pushed} tasks pushed, upgrades not counted)",
            self.reached,
            if pushed == 0 {
                0.0
            } else {
                100.0 * self.reached as f64 / pushed as f64
            }
        )?;
        writeln!(
            out,
            "open at the end    {} ({} acknowledged)",
            self.open + self.acknowledged,
            self.acknowledged
        )?;
        writeln!(out, "overdue at the end {}", self.overdue)?;
        writeln!(
            out,
            "escalated          {} (station desks {}, centre {})",
            self.escalated[0] + self.escalated[1],
            self.escalated[0],
            self.escalated[1]
        )?;
        let detail: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(
            out,
            "feedback rejected  {}{}",
            self.rejected_total(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", detail.join(", "))
            }
        )
    }
}

//! The run's results as a plain-text table: every figure, its baseline, and their ratio.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::commands::CommandsResult;
use super::fanout::FanoutResult;
use super::node::EventTime;
use super::revival::HIBERNATE_AFTER_SECS;
use super::stats::{Summary, count, ratio, us};
use super::{Measured, Plan, WORKERS, cpu};

const LABEL: usize = 34;
const COLUMN: usize = 25;

/// Rows of a label, a figure, its baseline and their ratio (also `bench checkout`'s).
pub(super) struct Table(pub(super) String);

impl Table {
    pub(super) fn title(&mut self, text: &str) {
        let _ = writeln!(self.0, "\n{text}");
    }

    pub(super) fn head(&mut self, a: &str, b: &str, r: &str) {
        self.row("", a, b, r);
    }

    pub(super) fn row(&mut self, label: &str, a: &str, b: &str, r: &str) {
        let _ = writeln!(self.0, "  {label:<LABEL$}{a:<COLUMN$}{b:<COLUMN$}{r}");
    }

    pub(super) fn line(&mut self, text: &str) {
        let _ = writeln!(self.0, "  {text}");
    }
}

/// Which figure of a [`Summary`] a row shows.
type Pick = fn(&Summary) -> f64;

/// A latency percentile, or `-` without samples.
fn pct(s: &Option<Summary>, pick: Pick) -> (String, Option<f64>) {
    match s {
        Some(s) => (us(pick(s)), Some(pick(s))),
        None => ("-".into(), None),
    }
}

pub(super) fn latency_rows(t: &mut Table, a: &Option<Summary>, b: &Option<Summary>) {
    let picks: [(&str, Pick); 4] = [
        ("latency p50", |s| s.p50),
        ("latency p99", |s| s.p99),
        ("latency max", |s| s.max),
        ("latency mean", |s| s.mean),
    ];
    for (label, pick) in picks {
        let ((a, av), (b, bv)) = (pct(a, pick), pct(b, pick));
        t.row(label, &a, &b, &ratio(av, bv));
    }
}

fn cpu_rows(t: &mut Table, a: &cpu::CpuUsage, b: &cpu::CpuUsage) {
    let p = |v: f64| format!("{v:.0}%");
    t.row("server CPU (100% = one core)", &p(a.server), &p(b.server), &ratio(Some(a.server), Some(b.server)));
    t.row("load generators' CPU", &p(a.client), &p(b.client), "");
    let total = format!("whole process CPU (of {}%)", 100 * cpu::cores());
    t.row(&total, &p(a.total), &p(b.total), "");
    t.row("other processes' CPU", &p(a.others), &p(b.others), "");
}

fn ended(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter().map(|(why, n)| format!("{n} ({why})")).collect::<Vec<_>>().join(", ")
}

fn errors(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter().map(|(code, n)| format!("{n} {code}")).collect::<Vec<_>>().join(", ")
}

fn fanout(t: &mut Table, plan: &Plan, a: &FanoutResult, b: &FanoutResult) {
    let f = &plan.fanout;
    t.title(&format!(
        "1. Fan-out: {} WebSocket viewers in one room, a host sending {} chat messages/s for {} s",
        count(f.viewers as f64),
        f.rate,
        f.seconds
    ));
    t.head("liveshop node", "bare broadcast", "node / bare");
    latency_rows(t, &a.latency, &b.latency);
    t.row(
        "deliveries/s",
        &count(a.delivered_per_sec),
        &count(b.delivered_per_sec),
        &ratio(Some(a.delivered_per_sec), Some(b.delivered_per_sec)),
    );
    t.row("messages sent", &count(a.sent as f64), &count(b.sent as f64), "");
    let got = |r: &FanoutResult| format!("{} / {}", count(r.deliveries as f64), count(r.expected as f64));
    t.row("delivered / expected", &got(a), &got(b), "");
    let complete =
        |r: &FanoutResult| format!("{} of {}", count(r.complete as f64), count(r.connected as f64));
    t.row("viewers with every message", &complete(a), &complete(b), "");
    cpu_rows(t, &a.cpu, &b.cpu);
    let per = |r: &FanoutResult| {
        let delivered_while_sending = r.delivered_per_sec * r.send_time.as_secs_f64();
        (delivered_while_sending > 0.0).then(|| 1e6 * r.cpu.server_secs / delivered_while_sending)
    };
    let show = |v: Option<f64>| v.map(|v| format!("{v:.2} µs")).unwrap_or_else(|| "-".into());
    t.row("server CPU per delivery", &show(per(a)), &show(per(b)), &ratio(per(a), per(b)));
    let frame =
        |r: &FanoutResult| if r.frames > 0 { count(r.bytes as f64 / r.frames as f64) } else { "-".into() };
    t.row("bytes per frame received", &frame(a), &frame(b), "");
    let conn = |r: &FanoutResult| {
        let secs = r.connect_time.as_secs_f64();
        format!("{secs:.1} s ({}/s)", count(r.connected as f64 / secs.max(1e-9)))
    };
    t.row("time to connect every viewer", &conn(a), &conn(b), "");
    let p = |v: f64| format!("{v:.0}%");
    t.row("server CPU while connecting", &p(a.connect_cpu.server), &p(b.connect_cpu.server), "");
    t.row("viewer connections ended early", &ended(&a.ended), &ended(&b.ended), "");
    t.row(
        "host: acks / errors",
        &format!("{} / {}", count(a.acks as f64), errors(&a.sender_errors)),
        &format!("n/a / {}", errors(&b.sender_errors)),
        "",
    );
    let late = |r: &FanoutResult| us(r.sender_late.as_micros() as f64);
    t.row("host's worst lateness vs schedule", &late(a), &late(b), "");
}

fn commands(t: &mut Table, plan: &Plan, a: &CommandsResult, b: &CommandsResult) {
    let c = &plan.commands;
    t.title(&format!(
        "2. Commands into one room: {} host connections x {} in flight, {} s of chat.send",
        c.connections, c.window, c.seconds
    ));
    t.line("   (answer = the node's ack, sent once the message is stored; the bare server's relayed frame;");
    t.line("    with this many in flight, answer latency is mostly queueing: in flight / rate)");
    t.head("liveshop node", "bare broadcast", "node / bare");
    t.row(
        "commands/s answered",
        &count(a.per_sec),
        &count(b.per_sec),
        &ratio(Some(a.per_sec), Some(b.per_sec)),
    );
    for (label, pick) in [("answer latency p50", 0), ("answer latency p99", 1)] {
        let get = |s: &Option<Summary>| s.map(|s| if pick == 0 { s.p50 } else { s.p99 });
        let show = |v: Option<f64>| v.map(us).unwrap_or_else(|| "-".into());
        t.row(
            label,
            &show(get(&a.latency)),
            &show(get(&b.latency)),
            &ratio(get(&a.latency), get(&b.latency)),
        );
    }
    cpu_rows(t, &a.cpu, &b.cpu);
    let per = |r: &CommandsResult| (r.per_sec > 0.0).then(|| r.cpu.server / 100.0 * 1e6 / r.per_sec);
    let show = |v: Option<f64>| v.map(|v| format!("{v:.1} µs")).unwrap_or_else(|| "-".into());
    t.row("server CPU per command", &show(per(a)), &show(per(b)), &ratio(per(a), per(b)));
    t.row("errors", &errors(&a.errors), &errors(&b.errors), "");
    t.row("unanswered after the run", &count(a.unanswered as f64), &count(b.unanswered as f64), "");
}

fn revival(t: &mut Table, plan: &Plan, m: &Measured) {
    let r = &m.revival;
    t.title(&format!(
        "3. Revival: GET /v1/rooms/{{room}}/state on a room with {} messages ({} bytes of state), \
         hibernated after {HIBERNATE_AFTER_SECS} s idle",
        plan.revival.history,
        count(r.state_bytes as f64)
    ));
    t.head("hibernated room", "live room", "hibernated / live");
    for (label, pick) in [("round trip p50", 0), ("round trip p99", 1), ("round trip max", 2)] {
        let get = |s: &Option<Summary>| s.map(|s| [s.p50, s.p99, s.max][pick]);
        let show = |v: Option<f64>| v.map(us).unwrap_or_else(|| "-".into());
        t.row(label, &show(get(&r.revived)), &show(get(&r.live)), &ratio(get(&r.revived), get(&r.live)));
    }
    let n = |s: &Option<Summary>| count(s.map_or(0, |s| s.n) as f64);
    t.row("samples", &n(&r.revived), &n(&r.live), "");
    let inst = r.instantiate_mean.map(|d| us(d.as_micros() as f64)).unwrap_or_else(|| "-".into());
    t.row("node's actor_revive_seconds, mean", &inst, "", "");
    if r.not_revived > 0 {
        t.line(&format!("warning: {} hibernated samples did not revive the room", r.not_revived));
    }
}

pub fn render(plan: &Plan, m: &Measured) -> String {
    let mut t = Table(String::new());
    let _ = writeln!(
        t.0,
        "liveshop bench rooms: {} cores, loopback only. Servers and load generators share this process \
         on separate tokio runtimes ({WORKERS} threads each); server CPU excludes the load generators' threads.",
        cpu::cores()
    );
    fanout(&mut t, plan, &m.node_fanout, &m.bare_fanout);
    commands(&mut t, plan, &m.node_commands, &m.bare_commands);
    revival(&mut t, plan, m);
    t.title("Notes");
    t.line("- The node releases fan-out in a batch whenever a room has drained its mailbox (at least every");
    t.line("  5 ms under a backlog, max_batch_ms), spaced by the audience (50 ms apart for 5,000");
    t.line("  connections, 0.4 ms for 40); the bare server relays each frame at once.");
    t.line("- The node runs with its defaults except the per-address connection and per-connection");
    t.line("  frame limits, lifted because every client comes from 127.0.0.1.");
    let saturated = |c: &cpu::CpuUsage| c.total >= 90.0 * cpu::cores() as f64;
    let phases = [
        ("fan-out on the node", &m.node_fanout.cpu),
        ("fan-out on the bare server", &m.bare_fanout.cpu),
        ("commands on the node", &m.node_commands.cpu),
        ("commands on the bare server", &m.bare_commands.cpu),
    ];
    let busy: Vec<&str> = phases.iter().filter(|(_, c)| saturated(c)).map(|(name, _)| *name).collect();
    if !busy.is_empty() {
        t.line(&format!(
            "- The machine's CPU was saturated (at least 90% of every core) during: {}.",
            busy.join("; ")
        ));
        t.line("  There, latencies include waiting for a core, on the server's and on the clients' side.");
    }
    let disturbed: Vec<&str> =
        phases.iter().filter(|(_, c)| c.others >= 10.0).map(|(name, _)| *name).collect();
    if !disturbed.is_empty() {
        t.line(&format!(
            "- WARNING: other processes used 10% of a core or more during: {}.",
            disturbed.join("; ")
        ));
        t.line("  Those figures are skewed; run again on a quiet machine.");
    }
    let h = &m.node_health;
    t.line(&format!(
        "- Node metrics: {} slow consumers closed, {} failed events, {} refused requests.",
        h.slow_consumers_closed, h.event_failures, h.refused
    ));
    let events = |e: &[EventTime]| {
        e.iter()
            .map(|e| format!("{} {} x {}", e.kind, us(e.mean.as_micros() as f64), count(e.count as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    t.line(&format!(
        "- Node's room events, mean time to handle x count, then the group commits that made them durable: fan-out phase: {};",
        events(&h.fanout_events)
    ));
    t.line(&format!("  commands phase: {}.", events(&h.commands_events)));
    t.line("  (wall time: inflated where the CPU was saturated)");
    t.line(&format!(
        "- Bare server: messages lost by connections lagging over {} behind: {} in the fan-out, {} in",
        super::baseline::CAPACITY,
        count(m.bare_lagged.0 as f64),
        count(m.bare_lagged.1 as f64)
    ));
    t.line("  the commands phase (where every host connection receives every host's frames).");
    t.0
}

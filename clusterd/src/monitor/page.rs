//! The status page at `/`: one server-rendered HTML document (complete without JavaScript), and
//! `/page.js`, which fetches `/` again every two seconds and swaps the `<main>` content in place, so
//! progress bars move without a reload. Read-only (no forms, no buttons that act), no secrets, no
//! external resources; laid out in one column on a phone.

use super::sample::{Progress, ResourceDoc, StatusDoc};
use std::fmt::Write;

/// Refreshes `<main id="content">` from a fresh copy of the page. `data-refreshes` on `<html>` counts
/// the in-place updates (a test tells an update from a reload by it); a failed fetch marks the page
/// stale instead of clearing it.
pub const SCRIPT: &str = r#""use strict";
(function () {
  var root = document.documentElement;
  root.dataset.live = "1";
  root.dataset.refreshes = "0";
  function refresh() {
    fetch("/", { cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("content");
        if (fresh) { document.getElementById("content").innerHTML = fresh.innerHTML; }
        var t = doc.getElementById("updated");
        if (t) { document.getElementById("updated").textContent = t.textContent; }
        document.body.classList.remove("stale");
        root.dataset.refreshes = String(Number(root.dataset.refreshes) + 1);
      })
      .catch(function () { document.body.classList.add("stale"); })
      .finally(function () { setTimeout(refresh, 2000); });
  }
  setTimeout(refresh, 2000);
})();
"#;

const STYLE: &str = r#"
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --muted: #6e7781; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; padding: 0.75rem; max-width: 60rem; }
h1 { font-size: 1.35rem; margin: 0.2rem 0 0.6rem; }
h2 { font-size: 1.1rem; margin: 1.2rem 0 0.4rem; border-bottom: 1px solid var(--line); padding-bottom: 0.2rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: 0.6rem; }
.card { border: 1px solid var(--line); border-radius: 0.5rem; padding: 0.6rem 0.75rem; }
.card h3 { font-size: 1rem; margin: 0 0 0.3rem; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 0.75rem; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); font-weight: 600; }
progress { width: 100%; height: 1.1rem; }
.table { overflow-x: auto; } table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 0.85rem; margin-top: 1.5rem; }
body.stale main { opacity: 0.5; } body.stale footer::after { content: " · connection lost, retrying"; color: var(--bad); }
"#;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// A state word with a colour class: good states green, transitional amber, bad red.
fn state(word: &str) -> String {
    let class = match word {
        "UpToDate" | "Connected" | "Established" | "Primary" | "Secondary" | "holding" | "idle" | "online" | "up" => "ok",
        "SyncSource" | "SyncTarget" | "VerifyS" | "VerifyT" | "Connecting" | "claiming" | "starting" | "stopping" | "Consistent"
        | "WFBitMapS" | "WFBitMapT" | "PausedSyncS" | "PausedSyncT" | "Attaching" => "warn",
        _ => "bad",
    };
    format!(r#"<span class="{class}">{}</span>"#, esc(word))
}

fn progress(w: &mut String, name: &str, p: &Progress) {
    let pct = p.done_ratio * 100.0;
    let _ = write!(
        w,
        r#"<dt>{kind}</dt><dd><progress id="progress-{id}" max="1" value="{ratio:.4}">{pct:.1} %</progress><br><span class="progress-text">{pct:.1} % · {left} left"#,
        kind = p.kind,
        id = esc(name),
        ratio = p.done_ratio,
        left = bytes(p.remaining_bytes),
    );
    if p.paused {
        w.push_str(" · paused");
    } else if p.speed_bytes_per_second > 0 {
        let _ = write!(w, " · {}/s", bytes(p.speed_bytes_per_second));
        if let Some(eta) = p.eta_seconds {
            let _ = write!(w, " · ETA {}", duration(eta));
        }
    }
    w.push_str("</span></dd>");
}

fn resource(w: &mut String, r: &ResourceDoc) {
    let _ = write!(w, r#"<div class="card resource" data-resource="{n}"><h3>{n}</h3><dl>"#, n = esc(&r.name));
    if !r.up {
        let _ = write!(w, "<dt>state</dt><dd>{}</dd><dt>why</dt><dd>{}</dd></dl></div>", state("down"), esc(r.error.as_deref().unwrap_or("down")));
        return;
    }
    let _ = write!(w, "<dt>role</dt><dd>{}</dd><dt>disk</dt><dd>{}</dd>", state(&r.role), state(&r.disk));
    if let Some(peer) = &r.peer {
        let _ = write!(
            w,
            "<dt>{}</dt><dd>{} {}</dd><dt>link</dt><dd>{} {}</dd>",
            esc(peer),
            state(&r.peer_role),
            state(&r.peer_disk),
            state(&r.connection),
            state(&r.replication)
        );
    }
    let _ = write!(w, "<dt>size</dt><dd>{}</dd><dt>out of sync</dt><dd>{}</dd>", bytes(r.size_bytes), bytes(r.out_of_sync_bytes));
    if let Some(p) = &r.progress {
        progress(w, &r.name, p);
    }
    if r.suspended {
        w.push_str(r#"<dt>I/O</dt><dd class="bad">suspended (fencing)</dd>"#);
    }
    if r.split_brain {
        w.push_str(r#"<dt>split brain</dt><dd class="bad">yes: resolve by hand</dd>"#);
    }
    if let Some(e) = &r.error {
        let _ = write!(w, "<dt>last error</dt><dd>{}</dd>", esc(e));
    }
    w.push_str("</dl></div>");
}

fn main_content(w: &mut String, d: &StatusDoc) {
    w.push_str(r#"<section id="cluster"><h2>Cluster</h2>"#);
    match &d.cluster {
        Some(c) => {
            let holder = c.holder.as_deref().map_or_else(|| r#"<span class="bad">nobody</span>"#.to_string(), esc);
            let _ = write!(w, "<dl><dt>group holder</dt><dd id=\"holder\">{holder}</dd><dt>phase</dt><dd id=\"phase\">{}</dd><dt>epoch</dt><dd>{}</dd>", state(c.phase), c.epoch);
            for (k, v, class) in [("split brain", &c.split_brain_warning, "bad"), ("waiting", &c.waiting, "warn"), ("last failure", &c.last_failure, "warn")] {
                if let Some(v) = v {
                    let _ = write!(w, r#"<dt>{k}</dt><dd class="{class}">{}</dd>"#, esc(v));
                }
            }
            w.push_str("</dl>");
            // Issue 17: named groups in a table (a single `group:` is the list above).
            if d.groups.len() > 1 || d.groups.first().is_some_and(|g| g.name != crate::config::LEGACY_GROUP_NAME) {
                w.push_str(r#"<table id="groups"><tr><th>group</th><th>holder</th><th>phase</th><th>epoch</th><th>access</th></tr>"#);
                for g in &d.groups {
                    let holder = g.holder.as_deref().map_or_else(|| r#"<span class="bad">nobody</span>"#.to_string(), esc);
                    let _ = write!(w, "<tr data-group=\"{}\"><td>{}</td><td>{holder}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&g.name), esc(&g.name), state(g.phase), g.epoch, g.access);
                }
                w.push_str("</table>");
            }
        }
        None => w.push_str("<p>No failover group configured on this node.</p>"),
    }
    w.push_str(r#"</section><section id="nodes"><h2>Nodes</h2><div class="cards">"#);
    for n in &d.nodes {
        let online = match n.online {
            Some(true) => state("online"),
            Some(false) => state("offline"),
            None => "unknown".into(),
        };
        let _ = write!(
            w,
            r#"<div class="card node" data-node="{name}"><h3>{name}{me}</h3><dl><dt>heartbeat</dt><dd>{online}</dd><dt>group</dt><dd>{holds}</dd></dl></div>"#,
            name = esc(&n.name),
            me = if n.this_node { " (this node)" } else { "" },
            holds = if n.holds_group { "holds it" } else { "-" },
        );
    }
    w.push_str("</div></section>");
    if !d.links.is_empty() {
        w.push_str(r#"<section id="links"><h2>Heartbeat links</h2><div class="table"><table><tr><th>link</th><th>state</th><th>last heard</th><th>rejected</th></tr>"#);
        for l in &d.links {
            let heard = l.last_heard_ms_ago.map_or_else(|| "never".to_string(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0));
            let _ = write!(w, "<tr><td>{}</td><td>{}</td><td>{heard}</td><td>{}</td></tr>", esc(&l.name), state(if l.up { "up" } else { "down" }), l.rejected);
        }
        w.push_str("</table></div></section>");
    }
    w.push_str(r#"<section id="resources"><h2>Resources</h2><div class="cards">"#);
    for r in &d.resources {
        resource(w, r);
    }
    if d.resources.is_empty() {
        w.push_str("<p>No replicated resources.</p>");
    }
    let _ = write!(w, r#"</div></section><section id="sessions"><h2>iSCSI sessions</h2><p>Target {} on this node.</p>"#, if d.target.running { "served" } else { "not served" });
    if !d.target.sessions.is_empty() {
        w.push_str(r#"<div class="table"><table><tr><th>initiator</th><th>target</th><th>from</th></tr>"#);
        for s in &d.target.sessions {
            let _ = write!(w, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&s.initiator), esc(&s.target), esc(&s.peer_address));
        }
        w.push_str("</table></div>");
    }
    w.push_str("</section>");
}

/// The whole page.
pub fn render(d: &StatusDoc) -> String {
    let mut w = String::with_capacity(8 * 1024);
    let phase = d.cluster.as_ref().map_or("standalone", |c| c.phase);
    let _ = write!(
        w,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{node} · clusterd</title><style>{STYLE}</style></head><body><header><h1>{node} <small>{phase}</small></h1></header><main id="content">"#,
        node = esc(&d.node),
        phase = esc(phase),
    );
    main_content(&mut w, d);
    let _ = write!(
        w,
        r#"</main><footer>clusterd {v} · up {up} · read-only · updated <span id="updated">{time}</span> · <a href="/metrics">/metrics</a> · <a href="/status.json">status.json</a><noscript> · reload to refresh</noscript></footer><script src="/page.js"></script></body></html>"#,
        v = esc(d.version),
        up = duration(d.uptime_seconds),
        time = esc(&d.time_utc),
    );
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_units() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(75), "1m15s");
    }
}

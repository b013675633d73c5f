// One system's monitoring page: plotly charts drawn from the page's state, re-read from the
// server (data.json) when a push arrives over the WebSocket or the socket reconnects.
(function () {
  const cfg = window.OVERSIGHT;
  let state = JSON.parse(document.getElementById("initial-state").textContent);
  const colors = {auto: "#2e7d32", human: "#1565c0", fallback: "#8d6e63", killed: "#c62828", breaker_open: "#ef6c00"};
  const layoutBase = {margin: {l: 48, r: 12, t: 10, b: 40}, legend: {orientation: "h", y: -0.25},
                      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"};
  const plotCfg = {displayModeBar: false, responsive: true};

  function empty(name, isEmpty) {
    const p = document.querySelector('[data-empty="' + name + '"]');
    if (p) p.hidden = !isEmpty;
  }
  function draw(id, traces, layout, isEmpty, emptyName) {
    const div = document.getElementById(id);
    empty(emptyName || id, isEmpty);
    div.hidden = isEmpty;
    if (!isEmpty) Plotly.react(div, traces, Object.assign({}, layoutBase, layout), plotCfg);
  }
  // A date axis around the points; one point alone gets a window's width on each side (plotly would
  // otherwise zoom into a millisecond).
  function dateAxis(xs) {
    const ts = xs.filter((x) => x !== null && x !== undefined).map((x) => new Date(x).getTime());
    if (!ts.length) return {type: "date"};
    const lo = Math.min(...ts), hi = Math.max(...ts);
    if (lo !== hi) return {type: "date"};
    const w = 1000 * (state.system.window.seconds || 3600);
    return {type: "date", range: [new Date(lo - w), new Date(hi + w)]};
  }
  function fmt(v) { return v === null || v === undefined ? "n/a" : Number(v).toPrecision(3); }

  function renderRate() {
    const now = new Date(state.now);
    const partialStart = new Date(now); partialStart.setSeconds(0, 0);
    const traces = state.routes.map((route) => {
      const pts = state.rate.filter((p) => p.name === "decisions." + route);
      return {type: "bar", name: route, x: pts.map((p) => p.t), y: pts.map((p) => p.value),
              marker: {color: colors[route] || "#999",
                       // the current minute is still filling: drawn lighter, not as a drop
                       opacity: pts.map((p) => (new Date(p.t) >= partialStart ? 0.35 : 1))}};
    });
    draw("rate", traces, {barmode: "stack", xaxis: {type: "date"}, yaxis: {title: "per minute"}},
         !state.rate.some((p) => p.value > 0));
  }

  function renderConfidence() {
    const c = state.confidence;
    const mids = c.edges.slice(0, -1).map((e, i) => (e + c.edges[i + 1]) / 2);
    const traces = [];
    if (c.now.length) traces.push({type: "bar", name: "newest " + c.sample + " decisions", x: mids, y: c.now,
                                   marker: {color: "#1565c0"}, opacity: 0.7});
    if (c.reference.length) traces.push({type: "scatter", mode: "lines", name: "reference", x: mids, y: c.reference,
                                         line: {shape: "hvh", color: "#101828", width: 2}});
    draw("confidence", traces, {xaxis: {title: "confidence", range: [0, 1]}, yaxis: {title: "share"}, bargap: 0.05},
         !c.now.length);
  }

  function renderDrift() {
    const d = state.drift;
    const isEmpty = !d.features.length;
    const hover = d.cells.map((row) => row.map((c) => c === null ? "no result" :
      c.method + " " + fmt(c.statistic) + " (threshold " + fmt(c.threshold) + ")<br>p-value " + fmt(c.p_value) +
      (c.p_threshold === null ? "" : " (drift below " + fmt(c.p_threshold) + ")") +
      "<br>" + (c.drifted === null ? "too little data" : c.drifted ? "DRIFT" : "calm") + ", " + c.rows + " rows"));
    const z = d.cells.map((row) => row.map((c) => (c === null || c.severity === null ? null : c.severity)));
    draw("heatmap", [{type: "heatmap", x: d.windows, y: d.features, z: z, text: hover, zmin: 0, zmax: 2,
                      colorscale: [[0, "#e3f3e4"], [0.5, "#fff3c4"], [0.5001, "#f9b27c"], [1, "#c62828"]],
                      hovertemplate: "%{y}<br>window %{x}<br>%{text}<extra></extra>", xgap: 1, ygap: 1,
                      colorbar: {title: "severity"}}],
         {margin: {l: Math.min(150, Math.round(window.innerWidth / 4)), r: 12, t: 10, b: 50}, xaxis: dateAxis(d.windows),
          yaxis: {automargin: true}}, isEmpty, "drift");
    // Log scale: 0 (no effect at all) cannot be drawn on it, so it sits at the axis' floor of 0.01.
    const lines = d.features.map((f, i) => ({type: "scatter", mode: "lines+markers", name: f, x: d.windows,
                                              y: z[i].map((v) => (v === null ? null : Math.max(v, 0.01))),
                                              connectgaps: false}));
    lines.push({type: "scatter", mode: "lines", name: "threshold", x: [d.windows[0], d.windows[d.windows.length - 1]],
                y: [1, 1], line: {dash: "dash", color: "#c62828"}, hoverinfo: "skip"});
    const div = document.getElementById("drift-lines");
    div.hidden = isEmpty;
    if (!isEmpty) Plotly.react(div, lines, Object.assign({}, layoutBase, {yaxis: {title: "severity (drift > 1)", type: "log"},
                                                                       xaxis: dateAxis(d.windows)}), plotCfg);
  }

  function seriesTraces(names, labels) {
    return names.filter((n) => state.series[n] && state.series[n].length).map((n) => ({
      type: "scatter", mode: "lines+markers", name: labels[n],
      x: state.series[n].map((p) => p[0]), y: state.series[n].map((p) => p[1])}));
  }

  function renderPerformance() {
    const traces = seriesTraces(["perf.accuracy", "perf.mean_reward", "perf.agreement", "perf.ece"],
      {"perf.accuracy": "accuracy", "perf.mean_reward": "mean reward", "perf.agreement": "human–model agreement",
       "perf.ece": "calibration error (ECE)"});
    draw("performance", traces, {yaxis: {range: [0, 1.05]}, xaxis: dateAxis(traces.flatMap((t) => t.x))},
         !traces.length);
  }

  function renderLoops() {
    const traces = seriesTraces(["loop.own_outcome_share", "loop.correlation", "loop.exposure_gini", "loop.homogeneity"],
      {"loop.own_outcome_share": "outcomes after own decisions", "loop.correlation": "confidence–outcome correlation",
       "loop.exposure_gini": "exposure concentration (Gini)", "loop.homogeneity": "homogeneity (Jaccard)"});
    if (traces.length) {
      const xs = traces.flatMap((t) => t.x).sort();
      traces.push({type: "scatter", mode: "lines", name: "echo (0.8)", x: [xs[0], xs[xs.length - 1]], y: [0.8, 0.8],
                   line: {dash: "dash", color: "#c62828"}, hoverinfo: "skip"});
    }
    draw("loops", traces, {yaxis: {range: [-1.05, 1.05]}, xaxis: dateAxis(traces.flatMap((t) => t.x))},
         !traces.length);
  }

  function renderAlerts() {
    const ul = document.getElementById("alerts");
    ul.replaceChildren();
    state.alerts.forEach((a) => {
      const li = document.createElement("li");
      const badge = document.createElement("span");
      badge.className = "badge " + (a.state === "open" ? "bad" : "ok");
      badge.textContent = a.state;
      const when = document.createElement("span");
      when.className = "muted small";
      when.textContent = " " + new Date(a.opened_at).toLocaleString() + (a.acked_by ? " · acknowledged by " + a.acked_by : "");
      li.append(badge, " " + a.kind + ": " + a.message, when);   // text only: never parsed as HTML
      if (cfg.ackUrl && !a.acked_by) {
        const form = document.createElement("form");
        form.method = "post"; form.className = "inline";
        form.action = cfg.ackUrl.replace("ALERT", encodeURIComponent(a.id));
        const token = document.createElement("input");
        token.type = "hidden"; token.name = "csrfmiddlewaretoken"; token.value = cfg.csrf;
        const button = document.createElement("button");
        button.type = "submit"; button.className = "small"; button.textContent = "Acknowledge";
        button.setAttribute("aria-label", "Acknowledge alert " + a.id);
        form.append(token, button);
        li.append(" ", form);
      }
      ul.append(li);
    });
    empty("alerts", !state.alerts.length);
  }

  const LEVEL = {closed: 0, half_open: 1, open: 2};
  const STATE_NAMES = ["closed", "half-open", "open"];
  function renderBreakers() {
    const b = state.breakers;
    const own = b.states.find((s) => !s.model) || {state: "closed", label: "closed", reason: ""};
    const models = b.states.filter((s) => s.model && s.state !== "closed");
    const p = document.getElementById("breaker-state");
    p.replaceChildren();
    const badge = document.createElement("span");
    badge.className = "badge " + (own.state === "closed" ? "ok" : own.state === "open" ? "bad" : "warn");
    badge.textContent = own.label;
    p.append(badge, " ");
    if (own.state === "open") p.append("Every decision gets the fallback (route breaker_open)" +
      (own.manual ? "; opened by hand, a person closes it" : "") + ". ");
    if (own.state === "half_open") p.append("A canary share of " + Math.round(b.policy.canary_share * 100) +
      " % of decisions goes to the model; the rest gets the fallback. " +
      (own.awaiting_person ? "The figures recovered: on this level-1 system a person closes it. " : ""));
    if (own.reason) p.append("Why: " + own.reason + (own.by ? " (" + own.by + ")" : "") + ".");
    models.forEach((m) => p.append(document.createElement("br"), "Model " + m.model + ": " + m.label + " (" + m.reason + ")"));

    const own_events = b.events.filter((e) => !e.model);
    const xs = [], ys = [], texts = [];
    own_events.forEach((e, i) => {
      if (i === 0) { xs.push(e.at); ys.push(LEVEL[e.from] || 0); texts.push(""); }
      xs.push(e.at); ys.push(LEVEL[e.to] || 0); texts.push(e.by + ": " + e.reason);
    });
    if (own_events.length) { xs.push(state.now); ys.push(LEVEL[own.state] || 0); texts.push("now"); }
    draw("breaker-timeline", [{type: "scatter", mode: "lines+markers", x: xs, y: ys, text: texts,
                               line: {shape: "hv", color: "#ef6c00"}, name: "breaker",
                               hovertemplate: "%{x}<br>%{text}<extra></extra>"}],
         {yaxis: {tickvals: [0, 1, 2], ticktext: STATE_NAMES, range: [-0.3, 2.3], automargin: true},
          // at least the last hour: a flip a second ago is a step, not a zoom into milliseconds
          xaxis: {type: "date", range: [new Date(Math.min(new Date(state.now).getTime() - 3600e3,
                                                          xs.length ? new Date(xs[0]).getTime() : Infinity)),
                                        new Date(new Date(state.now).getTime() + 60e3)]},
          showlegend: false, height: 180}, !own_events.length, "breaker");
    const ol = document.getElementById("breaker-events");
    ol.replaceChildren();
    b.events.slice(-10).reverse().forEach((e) => {
      const li = document.createElement("li");
      const when = document.createElement("span");
      when.className = "muted small";
      when.textContent = new Date(e.at).toLocaleString() + " · " + e.by + " ";
      li.append(when, (e.model ? "model " + e.model + ": " : "") + e.from.replace("_", "-") + " → " +
                e.to.replace("_", "-") + ": " + e.reason);   // text only: never parsed as HTML
      ol.append(li);
    });
    const pol = b.policy, parts = [];
    if (!pol.enabled) parts.push("the evaluation is off for this system");
    if (pol.min_accuracy !== null) parts.push("accuracy below " + pol.min_accuracy);
    if (pol.min_mean_reward !== null) parts.push("mean reward below " + pol.min_mean_reward);
    if (pol.max_drifted_share !== null) parts.push("a share of drifted features above " + pol.max_drifted_share);
    if (pol.max_error_rate !== null) parts.push("an error rate above " + pol.max_error_rate);
    if (pol.max_deadline_miss_rate !== null) parts.push("deadline misses above " + pol.max_deadline_miss_rate);
    if (pol.feedback_loop) parts.push("an open feedback-loop alert");
    document.getElementById("breaker-policy").textContent = "A window with " + parts.join(", ") +
      " opens it (accuracy and reward once a window has " + pol.min_outcomes + " outcomes). After " +
      pol.cooldown_s + " s it goes half-open; the next window that clears the thresholds by " + pol.recover_margin +
      " closes it" + (state.system.level === 1 ? " when a person does (level 1)." : ".");
  }

  function renderMitigation() {
    const m = state.mitigation, p = document.getElementById("mitigation-state");
    if (!m || !p) return;
    const share = (v) => Math.round(v * 100) + " %";
    p.textContent = m.active
      ? "Mitigation active since " + new Date(m.started_at).toLocaleString() + " (" + m.started_by + "): " +
        share(m.exploration_share) + " of released decisions are served from a non-model source, model weight " +
        m.model_weight + ". Why: " + m.reason + "."
      : "No mitigation active. Policy: " + (m.policy.mode === "auto" ? "starts by itself when the feedback-loop alert fires"
        : m.policy.mode === "off" ? "off" : "an admin starts it") + " (share " + share(m.policy.exploration_share) + ").";
  }

  function renderStopped() {
    const p = document.getElementById("stopped");
    p.hidden = !state.system.stopped;
    p.textContent = state.system.stopped ? "Stopped: " + state.system.stopped + " — every decision gets the fallback." : "";
  }

  // The chaos-drill card: what runs (the forms follow it), and the past drills' reports.
  function renderDrill() {
    const d = state.drills, p = document.getElementById("drill-running");
    if (!d || !p) return;
    const active = !!(d.running && d.running.active);
    p.replaceChildren();
    if (active) { const badge = document.createElement("span"); badge.className = "badge warn"; badge.textContent = "running"; p.append(badge, " "); }
    p.append(d.running ? d.running.text : "No drill is running.");   // text only: never parsed as HTML
    const stop = document.getElementById("drill-stop"), start = document.getElementById("drill-start");
    if (stop) { stop.hidden = !active; document.getElementById("drill-stop-id").value = active ? d.running.id : ""; }
    if (start) start.hidden = !!d.running;
    const ul = document.getElementById("drill-reports");
    ul.replaceChildren();
    d.past.forEach((r) => {
      const li = document.createElement("li"), head = document.createElement("strong");
      head.textContent = r.title;
      li.append(head);
      (r.sentences.length ? r.sentences : ["The report is being written (within 15 s)."]).forEach((text) => {
        const line = document.createElement("p"); line.className = "small"; line.textContent = text; li.append(line);
      });
      if (r.routes.length) {
        const table = document.createElement("table"), body = document.createElement("tbody");
        table.className = "small";
        table.createTHead().insertRow().append(...["Route", "Decisions"].map((t) => { const th = document.createElement("th"); th.textContent = t; return th; }));
        r.routes.forEach(([route, n]) => { const row = body.insertRow(); row.insertCell().textContent = route; row.insertCell().textContent = n; });
        table.append(body); li.append(table);
      }
      ul.append(li);
    });
    empty("drills", !d.past.length);
  }

  function render() {
    renderStopped(); renderBreakers(); renderRate(); renderConfidence(); renderDrift(); renderPerformance(); renderLoops();
    renderAlerts(); renderDrill(); renderMitigation();
  }

  let pending = null;
  function refresh() {   // one re-read for a burst of pushes
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      fetch(cfg.dataUrl, {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
        .then((s) => { state = s; render(); })
        .catch(() => {});
    }, 150);
  }

  render();
  let opened = false;
  window.liveSocket(cfg.socket, {
    onopen: () => { if (opened) refresh(); opened = true; },   // a reconnect re-reads what it missed
    onmessage: (m) => { if (m.type !== "hello" && m.type !== "pong") refresh(); },
  });
})();

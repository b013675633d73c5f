// A review item's page: the lease follows the person, and the keys.
//
// While the page is open a heartbeat renews the lease (every fifth of it, at most a minute) and the
// timer counts down what is left; a lease that ran out is taken again by the next heartbeat if
// nobody else took the item. Closing the page gives the item back (navigator.sendBeacon on
// pagehide), unless the person acted (a form was sent). Keys: A approve, R reject, M modify,
// G give back, J next, K previous, ? the list of keys; ignored while typing in a field.
//
// The next item is prefetched: the page names the item the person's next claim would take now
// (data-ready-url: nothing is claimed for it) and fetches its page, shown as theirs. Approve, reject
// or modify then go by fetch: the server resolves this item and claims that one if it is still free,
// and the browser opens the page it already holds. When someone else took it meanwhile, the server
// claims the next free one and the browser loads that page as usual.
(function () {
  const lease = document.getElementById("lease");
  const status = document.getElementById("key-status");
  const dialog = document.getElementById("keys");
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]");
  const GAVE_BACK = "review-gave-back";  // sessionStorage: the item this tab gave back on its way out
  let leaving = false;  // a form was sent: the server does what it asks, the page does not give back
  let lost = false;  // someone else has the item now: no more heartbeats, nothing to give back

  function say(text) {
    if (status) status.textContent = text;
  }

  document.querySelectorAll("form").forEach((f) => f.addEventListener("submit", () => { leaving = true; }));

  // A reload gives the item back on the way out; the reloaded page takes it again if it is still free.
  const claimForm = document.getElementById("claim-form");
  if (claimForm && sessionStorage.getItem(GAVE_BACK) === claimForm.dataset.item) {
    sessionStorage.removeItem(GAVE_BACK);
    leaving = true;
    claimForm.requestSubmit(document.getElementById("claim"));
  }

  const SAID = "review-said";  // sessionStorage: what the last action did, shown by the page it opened
  if (lease && lease.hasAttribute("data-ready-page")) {
    // Opened from the copy fetched before the action: the address without the marker, the action's
    // confirmation (the server sent it along, not as a message), the real lease asked for at once.
    const clean = new URL(location.href);
    clean.searchParams.delete("ready");
    history.replaceState(history.state, "", clean.pathname + clean.search + clean.hash);
    const said = sessionStorage.getItem(SAID);
    sessionStorage.removeItem(SAID);
    if (said) {
      const ul = document.createElement("ul");
      ul.className = "messages";
      const li = document.createElement("li");
      li.className = "success";
      li.setAttribute("role", "status");
      li.textContent = said;
      ul.append(li);
      const h1 = document.querySelector("main h1");
      if (h1) h1.before(ul);
    }
  }

  const resolveForm = document.getElementById("resolve-form");
  let ready = "";  // the next item's id, once its page is fetched
  let sending = false;
  let native = false;  // the script's own way failed: the form goes the usual way
  if (lease && lease.dataset.readyUrl) {
    fetch(lease.dataset.readyUrl, {credentials: "same-origin"}).then((r) => {
      if (r.ok) {
        ready = lease.dataset.readyItem;
        document.body.dataset.nextReady = ready;
      }
    }).catch(() => { /* not prefetched: the action loads the next page as usual */ });
  }
  if (resolveForm) {
    resolveForm.addEventListener("submit", (e) => {
      const op = e.submitter ? e.submitter.value : "";
      const then = resolveForm.querySelector("[name=then]");
      if (native || !ready || !["approve", "reject", "modify"].includes(op) || !then || then.value !== "next") return;
      e.preventDefault();
      if (sending) return;
      sending = true;
      const body = new FormData(resolveForm, e.submitter);
      body.append("ready", ready);
      fetch(resolveForm.action, {method: "POST", body, credentials: "same-origin",
                                 headers: {Accept: "application/json"}, redirect: "manual"})
        .then((r) => (r.ok && (r.headers.get("Content-Type") || "").startsWith("application/json")
          ? r.json() : Promise.reject(new Error("not sent"))))
        .then((answer) => {
          if (answer.said) sessionStorage.setItem(SAID, answer.said);
          location.assign(answer.url);
        })
        .catch(() => {
          // Refused (the item is not yours any more, the output does not validate) or offline: the
          // usual way, which shows the refusal with what was typed.
          native = true;
          sending = false;
          resolveForm.requestSubmit(e.submitter);
        });
    });
  }

  if (lease) {
    const left = lease.querySelector("#lease-left");
    const said = lease.querySelector("#lease-said");
    const leaseS = Number(lease.dataset.leaseS) || 300;
    const everyMs = Math.min(60, leaseS / 5) * 1000;
    let deadline = Date.now() + Number(lease.dataset.secondsLeft) * 1000;
    let beating = false;

    const clock = (s) => Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");

    function tick() {
      if (lost) return;
      const s = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
      left.textContent = clock(s);
      lease.dataset.secondsLeft = String(s);
      said.textContent = s > 0
        ? "left on your lease: it renews while this page is open; closing the page gives the item back."
        : "— your lease ran out: this page claims the item again if nobody else has.";
      if (s === 0) beat();
    }

    function beat() {
      if (beating || lost || leaving) return;
      beating = true;
      fetch(lease.dataset.heartbeatUrl, {
        method: "POST", credentials: "same-origin",
        headers: {"X-CSRFToken": csrf ? csrf.value : "", Accept: "application/json"},
      }).then((r) => r.json().then((body) => {
        if (r.ok) {
          deadline = Date.now() + body.seconds_left * 1000;
          tick();
        } else {
          lost = true;
          lease.setAttribute("role", "alert");
          lease.textContent = (body.error && body.error.message) || "This item is no longer yours.";
          lease.append(" Approving, rejecting or modifying here will be refused.");
        }
      })).catch(() => { /* offline: the timer shows what is left; the next beat tries again */ })
        .finally(() => { beating = false; });
    }

    tick();
    setInterval(tick, 1000);
    setInterval(beat, everyMs);
    // Back here by a reload or history: the way out gave the item back (a beacon still in flight,
    // perhaps), so claim it again once that has landed.
    const nav = performance.getEntriesByType("navigation")[0];
    const returned = sessionStorage.getItem(GAVE_BACK) === lease.dataset.item || (nav && nav.type !== "navigate");
    sessionStorage.removeItem(GAVE_BACK);
    if (Number(lease.dataset.secondsLeft) === 0 || lease.hasAttribute("data-ready-page")) beat();
    else if (returned) setTimeout(beat, 1000);
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") beat(); });
    window.addEventListener("pageshow", (e) => { if (e.persisted) { leaving = false; beat(); } });

    window.addEventListener("pagehide", () => {
      if (leaving || lost) return;
      const body = new FormData();
      body.append("csrfmiddlewaretoken", csrf ? csrf.value : "");
      navigator.sendBeacon(lease.dataset.giveBackUrl, body);
      sessionStorage.setItem(GAVE_BACK, lease.dataset.item);
    });
  }

  function press(id, why) {
    const b = document.getElementById(id);
    if (!b) { say(why); return; }
    if (b.disabled) { say(b.getAttribute("aria-describedby") ? document.getElementById(b.getAttribute("aria-describedby")).textContent : "not possible now"); return; }
    b.click();
  }

  function openKeys() {
    if (dialog && !dialog.open) {
      dialog.showModal();
      document.getElementById("keys-close").focus();
    }
  }

  const opener = document.getElementById("keys-open");
  if (opener) opener.addEventListener("click", openKeys);

  const notYours = "This item is not yours: claim it first.";
  document.addEventListener("keydown", (e) => {
    // Plain keys only: Ctrl+A (select all), Ctrl+R (reload) and the like stay the browser's.
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat || e.isComposing) return;
    if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
    if (dialog && dialog.open) return;  // Escape closes it
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const act = {
      a: () => press("approve", notYours),
      r: () => press("reject", notYours),
      g: () => press("release-lease", notYours),
      m: () => {
        const box = document.getElementById("modify");
        if (!box) { say(notYours); return; }
        box.open = true;
        document.getElementById("output").focus();
      },
      j: () => { leaving = true; document.getElementById("next-form").requestSubmit(document.getElementById("next")); },
      k: () => {
        const prev = document.getElementById("previous");
        if (prev) prev.click(); else say("No earlier item: you have not resolved one before this one.");
      },
      "?": openKeys,
    }[key];
    if (act) { e.preventDefault(); act(); }
  });
})();

// The reference upload with a progress bar: the same form, sent by XHR (fetch has no upload
// progress), answered with JSON. Without this script the form posts as usual.
(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const button = form.querySelector("button[type=submit]");
  function say(text, bad) { status.textContent = text; status.className = "small" + (bad ? " error" : ""); }

  form.addEventListener("submit", (ev) => {
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return;   // the server says what is missing
    const max = Number(form.dataset.max);
    if (max && file.size > max) {
      ev.preventDefault();
      say("The file is " + file.size.toLocaleString() + " bytes, over the limit of " + max.toLocaleString() + ".", true);
      return;
    }
    ev.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    bar.hidden = false; bar.value = 0; button.disabled = true;
    say("Uploading…");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      bar.value = Math.round((100 * e.loaded) / e.total);
      say(bar.value < 100 ? "Uploading… " + bar.value + " %" : "Summarising on the server…");
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 201 && body && body.ok) {
        say(body.message + ".");
        const to = new URL(body.redirect, location.href);
        if (to.pathname === location.pathname) { location.hash = to.hash; location.reload(); } else location.assign(to);
        return;
      }
      button.disabled = false; bar.hidden = true;
      say(body && body.errors ? body.errors.join(" ") : "The upload failed (HTTP " + xhr.status + "); nothing was changed.", true);
    };
    xhr.onerror = () => { button.disabled = false; bar.hidden = true; say("The connection failed; nothing was changed. Try again.", true); };
    xhr.send(new FormData(form));
  });
})();

// The editor page: times typed and shown in the browser's time zone. Puts the zone in each form's
// hidden tz field and in a cookie (the page shows stored times in it from the next load on).
(function () {
  var tz = "";
  try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { tz = ""; }
  if (!tz) return;
  if (/^[A-Za-z0-9_+\-\/]+$/.test(tz)) document.cookie = "tz=" + tz + "; path=/; SameSite=Lax; max-age=31536000";
  document.querySelectorAll("input[data-tz]").forEach(function (input) { input.value = tz; });
  document.querySelectorAll("form [data-tz-label]").forEach(function (el) { el.textContent = tz; });
})();

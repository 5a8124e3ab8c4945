// Live numbers for the tidyq jobs page: polls the JSON of data-poll every data-refresh seconds
// and writes each value into the element with the matching data-field of the row with the same
// data-key (textContent only: the values are never parsed as HTML). When the set of rows or a
// row's status changed, the page is reloaded so the server renders the new rows.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-poll");
  var every = Math.max(0.5, Number(body.getAttribute("data-refresh")) || 2) * 1000;
  var polls = 0;

  function note(text) {
    var el = document.querySelector("[data-live=note]");
    if (el) { el.textContent = text; }
  }

  function rowsOf(tbody) {
    return Array.prototype.filter.call(tbody.children, function (tr) { return tr.hasAttribute("data-key"); });
  }

  function setField(el, value) {
    if (el.tagName === "PROGRESS") {
      el.value = Number(value) || 0;
    } else {
      el.textContent = value === null || value === undefined ? "" : String(value);
    }
  }

  // false when the section's rows are not the ones the data has (the page must be re-rendered)
  function apply(section, rows) {
    var tbody = document.querySelector("tbody[data-section=" + section + "]");
    if (!tbody) { return true; }
    var trs = rowsOf(tbody);
    if (trs.length !== rows.length) { return false; }
    for (var i = 0; i < rows.length; i++) {
      var tr = trs[i], row = rows[i];
      if (tr.getAttribute("data-key") !== String(row.key)) { return false; }
      var status = row.status !== undefined ? row.status : row.state;
      if (tr.hasAttribute("data-status") && status !== undefined && tr.getAttribute("data-status") !== status) {
        return false;
      }
      tr.querySelectorAll("a[data-link]").forEach(function (a) {
        var href = row[a.getAttribute("data-link")];
        if (typeof href === "string" && /^https?:\/\//.test(href)) {
          a.href = href;
          a.hidden = false;
        } else {
          a.removeAttribute("href");
          a.hidden = true;
        }
      });
      tr.querySelectorAll("[data-field]").forEach(function (el) {
        var name = el.getAttribute("data-field");
        if (Object.prototype.hasOwnProperty.call(row, name)) { setField(el, row[name]); }
      });
    }
    return true;
  }

  function tick() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (res) {
        return res.json().then(function (data) {
          if (!res.ok) { throw new Error(data.error || ("HTTP " + res.status)); }
          return data;
        });
      })
      .then(function (data) {
        var same = true;
        ["jobs", "queues", "workers", "breakers", "errors"].forEach(function (section) {
          if (data[section]) { same = apply(section, data[section]) && same; }
        });
        if (!same) { window.location.reload(); return; }
        polls += 1;
        body.setAttribute("data-polls", String(polls));
        var updated = document.querySelector("[data-live=updated]");
        if (updated) { updated.textContent = data.updated; }
        note("");
        window.setTimeout(tick, every);
      })
      .catch(function (e) {
        note("(live updates paused: " + e.message + ")");
        window.setTimeout(tick, every * 2);
      });
  }

  if (url) { window.setTimeout(tick, every); }
})();

// The instructor's live grid: learners x steps, kept live by the classroom
// socket (a learner's row is replaced whenever their progress, hand or
// machines change), time on the current step with a "stuck" flag, messages,
// resets, and a chart per lesson drawn as plain SVG: learners done and the
// median time, step by step.
(function () {
  "use strict";

  const root = document.getElementById("classroom");
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const table = document.getElementById("grid");
  const liveState = document.getElementById("live-state");
  const base = root.dataset.baseUrl;
  const SVG = "http://www.w3.org/2000/svg";

  let grid = JSON.parse(document.getElementById("grid-data").textContent);
  // Server time minus ours, so "time on step" does not depend on this machine's clock.
  let skew = Date.parse(grid.now) - Date.now();
  const rows = {};  // user id -> row data

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "className") node.className = attrs[k]; else node.setAttribute(k, attrs[k]);
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + " min " + (s < 10 ? "0" : "") + s + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  async function post(url, data) {
    const body = new FormData();
    Object.keys(data || {}).forEach(function (k) { body.append(k, data[k]); });
    const response = await fetch(url, {method: "POST", body: body, credentials: "same-origin",
                                       headers: {"X-CSRFToken": csrf, "Accept": "application/json"}});
    let json = {};
    try { json = await response.json(); } catch (err) { /* not JSON */ }
    return {ok: response.ok && json.ok !== false, body: json};
  }

  // ---- the table ------------------------------------------------------------
  function renderHead() {
    const thead = table.tHead;
    thead.textContent = "";
    const top = el("tr"), bottom = el("tr");
    top.appendChild(el("th", {rowspan: "2", className: "learner-head"}, "Learner"));
    grid.columns.forEach(function (col) {
      top.appendChild(el("th", {colspan: String(col.steps.length), className: "lesson-head"}, col.title));
      col.steps.forEach(function (step) {
        bottom.appendChild(el("th", {title: step.title, className: "step-head"}, String(step.number)));
      });
    });
    thead.appendChild(top);
    thead.appendChild(bottom);
  }

  function renderRow(row) {
    rows[row.user] = row;
    let tr = table.tBodies[0].querySelector('tr[data-user="' + row.user + '"]');
    const fresh = el("tr", {"data-user": String(row.user)});
    const who = el("th", {className: "learner", scope: "row"});
    const name = el("span", {className: "learner-name"}, row.name);
    who.appendChild(name);
    if (row.guest) who.appendChild(el("span", {className: "tag"}, "guest"));
    if (row.hand) {
      // An image, not the emoji: a machine without an emoji font showed an empty box.
      const hand = el("button", {type: "button", className: "hand", title: "Hand raised; click to lower it"});
      hand.appendChild(el("img", {className: "hand-icon", src: root.dataset.handIcon, alt: "hand raised"}));
      hand.addEventListener("click", function () { post(base + "learners/" + row.user + "/lower-hand"); });
      who.appendChild(hand);
    }
    const info = el("div", {className: "learner-info"});
    info.appendChild(el("span", {className: "on-step", "data-since": row.current ? row.current.since : ""}));
    if (row.replay) {
      info.appendChild(el("a", {href: row.replay, className: "replay-link", target: "_blank",
                                title: "Replay " + row.name + "'s latest lab, with its timeline"}, "replay"));
    }
    row.nodes.forEach(function (node) {
      if (node.state !== "ready") return;
      const link = el("a", {href: base + "nodes/" + node.id + "/watch/", className: "watch-link",
                            target: "_blank", title: "Watch " + row.name + "'s " + node.name + " live"},
                      "watch " + node.name);
      info.appendChild(link);
    });
    const lessons = {};
    const saved = {};
    row.nodes.forEach(function (node) { lessons[node.lesson] = true; });
    (row.saved || []).forEach(function (slug) {
      lessons[slug] = true;
      saved[slug] = true;
      info.appendChild(el("span", {className: "saved-badge", "data-lesson": slug,
                                   title: row.name + " has a saved machine for " + slug +
                                          ": their next Start can resume it"}, "saved " + slug));
    });
    Object.keys(lessons).forEach(function (slug) {
      const reset = el("button", {type: "button", className: "link reset", "data-lesson": slug,
                                  title: "Stop this learner's machines for " + slug + " and start fresh ones" +
                                         (saved[slug] ? ", deleting their saved machine" : "") + " (progress stays)"},
                       "reset");
      reset.addEventListener("click", async function () {
        const question = "Reset " + row.name + "'s lab machines for " + slug + "?" +
          (saved[slug] ? " Their saved machine is deleted too: everything on it is lost." : "") +
          " Their progress stays.";
        if (!confirm(question)) return;
        const result = await post(base + "learners/" + row.user + "/reset", {lesson: slug});
        reset.textContent = result.ok ? "resetting…" : (result.body.error || "failed");
      });
      info.appendChild(reset);
    });
    who.appendChild(info);
    fresh.appendChild(who);
    grid.columns.forEach(function (col) {
      col.steps.forEach(function (step) {
        const key = col.lesson + ":" + step.number;
        const cell = row.cells[key] || {state: "pending"};
        const isCurrent = row.current && row.current.lesson === col.lesson && row.current.step === step.number;
        const td = el("td", {className: "cell" + (isCurrent ? " current" : ""), "data-cell": key,
                             "data-state": cell.state,
                             title: step.number + ". " + step.title + ": " +
                                    (cell.state === "done" ? "done " + new Date(cell.done_at).toLocaleTimeString()
                                                           : (cell.message || "not done yet")) +
                                    (cell.failed ? " (" + cell.failed + " failed check" + (cell.failed === 1 ? "" : "s") + ")" : "")});
        if (cell.replay) {
          // The cell opens the replay where the step was done (or last failed).
          td.appendChild(el("a", {href: cell.replay, className: "cell-link", target: "_blank",
                                  "aria-label": "Replay " + row.name + " at step " + step.number}));
        }
        fresh.appendChild(td);
      });
    });
    if (tr) tr.replaceWith(fresh); else table.tBodies[0].appendChild(fresh);
    updateTimes();
    fillRecipients();
    renderStuck();
  }

  // ---- why the class is stuck -----------------------------------------------------
  // Per step, the learners on it whose latest check failed, grouped by the
  // reason it gave; rebuilt from the rows whenever one changes.
  const stuckList = document.getElementById("stuck-list");
  function renderStuck() {
    const steps = {};
    Object.keys(rows).forEach(function (id) {
      const current = rows[id].current;
      if (!current || !current.reason) return;
      const key = current.lesson + ":" + current.step;
      const step = steps[key] || (steps[key] = {lesson: current.lesson, number: current.step, reasons: {}});
      (step.reasons[current.reason] = step.reasons[current.reason] || []).push(rows[id]);
    });
    const order = [];
    grid.columns.forEach(function (col) {
      col.steps.forEach(function (s) {
        const key = col.lesson + ":" + s.number;
        if (steps[key]) order.push({key: key, title: (grid.columns.length > 1 ? col.title + ", " : "") +
                                                      "step " + s.number + ": " + s.title});
      });
    });
    stuckList.textContent = "";
    if (!order.length) {
      stuckList.appendChild(el("p", {className: "meta"}, "No failing checks on anyone's current step."));
      return;
    }
    order.forEach(function (item) {
      const box = el("div", {className: "stuck-step", "data-step": item.key});
      box.appendChild(el("h3", {}, item.title));
      const list = el("ul", {className: "stuck-reasons"});
      const reasons = steps[item.key].reasons;
      Object.keys(reasons).sort(function (a, b) { return reasons[b].length - reasons[a].length; })
        .forEach(function (reason) {
          const learners = reasons[reason];
          const li = el("li", {className: "stuck-reason"});
          li.appendChild(el("strong", {className: "stuck-count"},
                            learners.length + " learner" + (learners.length === 1 ? "" : "s") + ": "));
          li.appendChild(el("span", {className: "stuck-text"}, reason));
          const names = el("span", {className: "stuck-names"});
          learners.forEach(function (row, i) {
            if (i) names.appendChild(document.createTextNode(", "));
            const c = row.current;
            names.appendChild(el("a", {href: c.replay, target: "_blank", className: "stuck-name",
                                       title: c.failed + " failed check" + (c.failed === 1 ? "" : "s") +
                                              "; opens the replay at the latest"}, row.name));
          });
          li.appendChild(names);
          list.appendChild(li);
        });
      box.appendChild(list);
      stuckList.appendChild(box);
    });
  }

  function updateTimes() {
    const now = Date.now() + skew;
    table.querySelectorAll("tr[data-user]").forEach(function (tr) {
      const span = tr.querySelector(".on-step");
      const row = rows[tr.dataset.user];
      if (!row || !row.current) {
        const cells = row ? Object.values(row.cells) : [];
        const done = cells.filter(function (c) { return c.state === "done"; }).length;
        span.textContent = cells.length && done === cells.length ? "all done"
          : done ? "between lessons" : "not started";
        tr.classList.remove("stuck");
        return;
      }
      const seconds = (now - Date.parse(row.current.since)) / 1000;
      span.textContent = "step " + row.current.step + ": " + duration(seconds);
      const stuck = seconds > grid.stuck_seconds;
      tr.classList.toggle("stuck", stuck);
      span.title = stuck ? "On this step for longer than " + duration(grid.stuck_seconds) : "";
    });
  }
  setInterval(updateTimes, 1000);

  function fillRecipients() {
    const select = document.getElementById("message-to");
    const chosen = select.value;
    while (select.options.length > 1) select.remove(1);
    Object.keys(rows).forEach(function (id) {
      select.appendChild(el("option", {value: id}, rows[id].name));
    });
    select.value = chosen;
  }

  function renderAll() {
    renderHead();
    table.tBodies[0].textContent = "";
    if (!grid.rows.length) {
      const tr = el("tr", {className: "empty"});
      tr.appendChild(el("td", {colspan: "99"}, "No learners yet. Share the code or the link."));
      table.tBodies[0].appendChild(tr);
    }
    Object.keys(rows).forEach(function (id) { delete rows[id]; });
    grid.rows.forEach(renderRow);
    renderStuck();
    drawCharts(grid.stats);
  }

  // ---- charts (plain SVG), one per lesson, full width -------------------------
  // Each step a row: "N. its title" (long titles cut, the whole one on hover),
  // a bar of the learners done with it, and a bar of the median time it took.
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function lessonChart(column, steps, learners) {
    const rowH = 26, labelW = 330, doneW = 330, timeW = 260, gap = 70, top = 22;
    const width = labelW + doneW + gap + timeW + 80;
    const svg = svgEl("svg", {viewBox: "0 0 " + width + " " + (top + steps.length * rowH + 6),
                              width: "100%", role: "img",
                              "aria-label": column.title + ": learners done and median time per step"});
    svg.appendChild(svgEl("text", {x: labelW, y: 14, "class": "chart-head"}, "learners done"));
    svg.appendChild(svgEl("text", {x: labelW + doneW + gap, y: 14, "class": "chart-head"}, "median time"));
    const longest = Math.max.apply(null, steps.map(function (s) { return s.median_seconds || 0; }).concat([1]));
    steps.forEach(function (s, i) {
      const y = top + i * rowH;
      const full = s.step + ". " + s.title;
      const label = svgEl("text", {x: labelW - 10, y: y + 16, "text-anchor": "end", "class": "chart-label"},
                          full.length > 44 ? full.slice(0, 43) + "…" : full);
      label.appendChild(svgEl("title", {}, full));
      svg.appendChild(label);
      const done = learners ? doneW * s.done / learners : 0;
      svg.appendChild(svgEl("rect", {x: labelW, y: y + 4, width: doneW, height: 16, rx: 3, "class": "chart-track"}));
      if (done) svg.appendChild(svgEl("rect", {x: labelW, y: y + 4, width: Math.max(2, done), height: 16, rx: 3,
                                               "class": "chart-bar chart-done"}));
      svg.appendChild(svgEl("text", {x: labelW + doneW + 8, y: y + 16, "class": "chart-value"},
                            s.done + " / " + learners));
      const x = labelW + doneW + gap;
      const t = s.median_seconds ? Math.max(2, timeW * s.median_seconds / longest) : 0;
      if (t) svg.appendChild(svgEl("rect", {x: x, y: y + 4, width: t, height: 16, rx: 3, "class": "chart-bar"}));
      svg.appendChild(svgEl("text", {x: x + t + 8, y: y + 16, "class": "chart-value"},
                            s.median_seconds === null ? "–" : duration(s.median_seconds)));
    });
    return svg;
  }

  function drawCharts(stats) {
    const box = document.getElementById("charts");
    box.textContent = "";
    grid.columns.forEach(function (column) {
      const steps = stats.steps.filter(function (s) { return s.lesson === column.lesson; });
      const figure = el("figure", {className: "lesson-chart", "data-lesson": column.lesson});
      figure.appendChild(el("figcaption", {}, column.title));
      figure.appendChild(lessonChart(column, steps, stats.learners));
      box.appendChild(figure);
    });
  }

  // Charts follow the grid without hammering the server: one refresh per burst.
  let statsTimer = null;
  function refreshStats() {
    if (statsTimer) return;
    statsTimer = setTimeout(async function () {
      statsTimer = null;
      try {
        const response = await fetch(base + "grid.json", {credentials: "same-origin"});
        const fresh = await response.json();
        grid.stats = fresh.stats;
        drawCharts(grid.stats);
      } catch (err) { /* next event tries again */ }
    }, 1500);
  }

  // ---- messages -----------------------------------------------------------------
  document.getElementById("message-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const text = document.getElementById("message-text");
    const to = document.getElementById("message-to").value;
    const status = document.getElementById("message-status");
    const result = await post(root.dataset.messageUrl, {text: text.value, to: to});
    status.textContent = result.ok ? "Sent to " + result.body.sent_to + " learner" +
                                     (result.body.sent_to === 1 ? "" : "s") + "." : (result.body.error || "Not sent.");
    if (result.ok) text.value = "";
  });

  // ---- live updates ---------------------------------------------------------------
  let retry = 0;
  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
                             "/ws/classrooms/" + root.dataset.pk + "/");
    // "live" once the socket's own grid has come: the server has joined this
    // page to the classroom's updates by then, so nothing after it is missed
    // (on open it may not have yet).
    ws.onopen = function () { retry = 0; };
    ws.onmessage = function (message) {
      let event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      if (event.type === "grid") {
        grid = event;
        skew = Date.parse(grid.now) - Date.now();
        renderAll();
        liveState.textContent = "live";
        liveState.className = "live-state on";
      } else if (event.type === "learner") {
        const empty = table.tBodies[0].querySelector("tr.empty");
        if (empty) empty.remove();
        renderRow(event.row);
        refreshStats();
      }
    };
    ws.onclose = function (close) {
      liveState.className = "live-state off";
      if (close.code === 4403) { liveState.textContent = "not allowed"; return; }
      liveState.textContent = "reconnecting…";
      retry = Math.min(retry + 1, 5);
      setTimeout(connect, 500 * Math.pow(2, retry));
    };
  }

  renderAll();
  connect();
})();

"""Whole lessons in a real browser, done the way a new learner does them.

Issue 3: a new learner completes lesson 1 and lesson 5 by clicking the
commands in the text, and opens the published nginx of lesson 4 through the
lab's link.

The learner clicks each step's Run buttons in order and waits for the shell
to come back to its prompt before the next click; what the text asks them to
type without a button (`exit`, a container id, the join command node1
printed) is typed or pasted into the terminal. Quiz steps get the right
answer. Every step must turn done by itself, without a reload.

To know when a command has finished (the prompt is back) and to read what a
command printed, also lines scrolled out of view, the page's xterm.js
terminals are recorded as lesson.js creates them (an init script wraps the
global `Terminal` class); the buffer is what the learner sees and can scroll.
"""
from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.browser.accounts import sign_up

CONTENT = Path(__file__).resolve().parents[2] / "labs" / "courses" / "content"

COMMAND_SECONDS = 180    # one command (apt-get in a container, a service converging)
STEP_SECONDS = 90        # a step's check result after its last command
START_SECONDS = 120      # the lab's machines up, with a prompt

# Records every xterm.js Terminal the page makes, and reads their buffers.
RECORD_TERMINALS = r"""
(() => {
  let wrapped;
  const lab = window.__lab = {
    terms: [],
    term(name) {
      return lab.terms.find(function (t) {
        const box = t.element && t.element.closest(".terminal[data-node-name]");
        return box && box.dataset.nodeName === name;
      });
    },
    // The whole buffer (scrollback too), or from its line `from` on, wrapped
    // lines joined.
    text(name, from) {
      const t = lab.term(name);
      if (!t) return null;
      const b = t.buffer.active, out = [];
      for (let i = from || 0; i < b.length; i++) {
        const line = b.getLine(i), next = b.getLine(i + 1);
        const s = line.translateToString(!(next && next.isWrapped));
        if (line.isWrapped && out.length) out[out.length - 1] += s; else out.push(s);
      }
      return out.join("\n");
    },
    // Everything written after write number `writes`, escape sequences dropped:
    // the stream, not the screen, so a redraw cannot hide what came.
    since(name, writes) {
      const t = lab.term(name);
      if (!t) return "";
      return t.log.slice(Math.max(writes, 0)).join("")
        .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "")
        .replace(/\x1b\[[0-?]*[ -\/]*[@-~]/g, "")
        .replace(/\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMc]/g, "");
    },
    // What is left of the cursor, the cursor's line in the whole buffer, and
    // how many writes the terminal has parsed.
    cursor(name) {
      const t = lab.term(name);
      if (!t) return null;
      const b = t.buffer.active, line = b.getLine(b.baseY + b.cursorY);
      return {writes: t.writes, line: b.baseY + b.cursorY,
              before: line ? line.translateToString(false, 0, b.cursorX) : ""};
    },
  };
  Object.defineProperty(window, "Terminal", {
    configurable: true,
    get: function () { return wrapped; },
    set: function (Base) {
      wrapped = class extends Base {
        constructor(...args) {
          super(...args);
          this.writes = 0; this.log = []; this.decoder = new TextDecoder();
          lab.terms.push(this);
        }
        // xterm.js parses writes later, in batches: count and log a write once
        // it is parsed, so the buffer read next to these counts already shows it.
        write(data, callback) {
          const text = typeof data === "string" ? data : this.decoder.decode(data, {stream: true});
          return super.write(data, () => {
            this.writes++;
            this.log.push(text);
            if (callback) callback();
          });
        }
      };
    },
  });
})();
"""

# A shell waiting for input again, after output that came since `writes`:
# the node's `[node1] ~# `, a container's `root@3f4a1c9b2e7d:/# `, sh's `# `.
# With `echo`, only once that text (a typed command) has come back: showing a
# tab refits the terminal, and tmux then redraws the old prompt before the
# echo arrives, which alone looks like a finished command.
#
# The echo is looked for in the stream since `writes` and, failing that, on
# the screen from the line the command was typed at (`line`) down. The stream
# alone is not enough: tmux draws its screen, it does not relay the shell's
# bytes. When the rest of an echo and the Enter reach it in one batch on the
# bottom row, it scrolls first and then fills in the rest of the line in place
# (seen: 'ec -it aeb7', then '\r\n\x1b[46;32H3fdcbafc bash\r\n'): the learner
# sees one unbroken line, the stream holds it in two pieces.
# When the echo, a screenful of output and the prompt reach tmux in one batch,
# it scrolls (CSI n S) and draws only the last screen: the echo's line is
# never drawn at all (seen: `docker network inspect overnet` in lesson 5).
# Such a scroll comes only from new output (a tab's refit redraws the old
# screen in place), so it too shows the command came back.
AT_PROMPT = r"""
([name, writes, echo, line]) => {
  const c = window.__lab.cursor(name);
  if (c === null || c.writes <= writes || !/[#$] $/.test(c.before)) return false;
  if (!echo || window.__lab.since(name, writes).includes(echo)) return true;
  if (line >= 0 && (window.__lab.text(name, line) || "").includes(echo)) return true;
  return /\x1b\[\d*S/.test(window.__lab.term(name).log.slice(Math.max(writes, 0)).join(""));
}
"""


def echo_of(command: str) -> str:
    """What of a typed command surely comes back on one line: the start of its first line."""
    return command.splitlines()[0][:30] if command.strip() else ""


class Learner:
    """One learner in one browser page, with timings of what they did."""

    def __init__(self, page, site):
        self.page, self.site = page, site
        self.started = time.monotonic()
        page.context.add_init_script(RECORD_TERMINALS)

    # ---- the site -----------------------------------------------------------
    def sign_up(self, name):
        sign_up(self.page, self.site.url, name)

    def start(self, slug):
        self.slug = slug
        self.page.goto(f"{self.site.url}/lessons/{slug}/")
        self.page.click("#start-button")
        self.wait_for_shell("node1", START_SECONDS)

    def step(self, number):
        return self.page.locator(f'.step[data-step="{number}"]')

    def steps(self):
        return self.page.locator(".step")

    def expect_done(self, number, seconds=STEP_SECONDS):
        expect(self.step(number)).to_have_attribute("data-state", "done", timeout=seconds * 1000)

    # ---- terminals ----------------------------------------------------------
    def tab(self, node):
        return self.page.locator(f'.term-tab[data-node-name="{node}"]')

    def rows(self, node):
        """What the terminal shows right now (the DOM rows xterm.js draws)."""
        return self.page.locator(f'.terminal[data-node-name="{node}"] .xterm-rows')

    def text(self, node) -> str:
        return self.page.evaluate("name => window.__lab.text(name)", node) or ""

    def mark(self, node) -> dict:
        """Where `node`'s terminal is now: its write count and the cursor's line."""
        cursor = self.page.evaluate("name => window.__lab.cursor(name)", node)
        assert cursor is not None, f"{node}'s terminal is not open"
        return {"writes": cursor["writes"], "line": cursor["line"]}

    def prompt(self, node) -> str:
        """The prompt the cursor waits at (the text left of it)."""
        return self.page.evaluate("name => window.__lab.cursor(name).before", node)

    def wait_for_shell(self, node, seconds=COMMAND_SECONDS, after=None, command=""):
        """Wait until `node`'s terminal shows a prompt after the mark `after`
        (and the echo of `command`, when given, typed at that mark)."""
        after = after or {"writes": -1, "line": -1}
        try:
            self.page.wait_for_function(
                AT_PROMPT, arg=[node, after["writes"], echo_of(command), after["line"]],
                timeout=seconds * 1000, polling=100)
        except PlaywrightTimeoutError:
            # Say what came instead: the stream since `after`, the screen from
            # the typed line on, and the cursor's line.
            stream = self.page.evaluate("([n, w]) => window.__lab.since(n, w)",
                                        [node, after["writes"]])
            screen = self.page.evaluate("([n, l]) => window.__lab.text(n, l) || \"\"",
                                        [node, max(after["line"], 0)])
            cursor = self.page.evaluate("name => window.__lab.cursor(name)", node)
            raise AssertionError(f"no prompt after {command!r} on {node} in {seconds}s; "
                                 f"cursor {cursor!r}; stream since {after}: "
                                 f"{stream[:600]!r} ... {stream[-300:]!r}; "
                                 f"screen from the typed line: {screen[-600:]!r}") from None

    def open_tab(self, node):
        """The learner clicks a node's tab and waits for its prompt."""
        self.tab(node).click()
        expect(self.tab(node)).to_have_attribute("aria-selected", "true")
        self.page.wait_for_function("name => window.__lab.cursor(name) !== null", arg=node,
                                    timeout=30_000)
        self.wait_for_shell(node, 30)

    def type(self, node, line, seconds=COMMAND_SECONDS):
        """Type a line into `node`'s terminal (its tab shown) and wait for the prompt."""
        expect(self.tab(node)).to_have_attribute("aria-selected", "true")
        before = self.mark(node)
        self.page.keyboard.type(line)
        self.page.keyboard.press("Enter")
        self.wait_for_shell(node, seconds, after=before, command=line)

    def paste(self, node, text):
        """Paste into `node`'s terminal as the browser does on Ctrl+V: a paste
        event with the text on its clipboard data, which xterm.js handles."""
        self.page.evaluate("""([name, text]) => {
            const area = document.querySelector(
                '.terminal[data-node-name="' + name + '"] .xterm-helper-textarea');
            const data = new DataTransfer();
            data.setData("text/plain", text);
            area.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true,
                                                            cancelable: true}));
        }""", [node, text])

    # ---- the step text --------------------------------------------------------
    def buttons(self, number):
        """The step's command buttons with the node each one types into."""
        step = self.step(number)
        found = []
        for i in range(step.locator("pre.command").count()):
            pre = step.locator("pre.command").nth(i)
            node = pre.get_attribute("data-node")
            button = pre.locator("xpath=following-sibling::div[1]").locator(".cmd-run")
            found.append((button, node, pre.inner_text().strip()))
        return found

    def click_run(self, button, node, command, seconds=COMMAND_SECONDS):
        """Click a Run button; the page shows its node's tab and runs it there."""
        expect(button).to_have_text("Run")
        before = self.mark(node)
        button.click()
        expect(self.tab(node)).to_have_attribute("aria-selected", "true")
        self.wait_for_shell(node, seconds, after=before, command=command)

    def run_all(self, number, seconds=COMMAND_SECONDS):
        for button, node, command in self.buttons(number):
            self.click_run(button, node, command, seconds)

    def type_button(self, number, index, filled):
        """A command with a <placeholder>: its button opens a small form with a
        field per placeholder (prefilled from the screens); the learner puts in
        the values that make `filled` and runs it. `<...>` never reaches the shell."""
        button, node, command = self.buttons(number)[index]
        expect(button).to_have_text("Fill in…")
        button.click()
        form = self.step(number).locator("form.cmd-fill")
        expect(form).to_be_visible()
        # The values: `filled` read against the command's text.
        pattern = re.escape(command)
        for name in re.findall(r"<[A-Za-z][^<>\n]*>", command):
            pattern = pattern.replace(re.escape(name), "(.+?)", 1)
        values = re.fullmatch(pattern, filled).groups()
        inputs = form.locator("input")
        assert inputs.count() == len(values)
        for i, value in enumerate(values):
            inputs.nth(i).fill(value)
        expect(form.locator(".cmd-fill-preview")).to_have_text(filled)
        before = self.mark(node)
        form.get_by_role("button", name="Run").click()
        expect(self.tab(node)).to_have_attribute("aria-selected", "true")
        self.wait_for_shell(node, COMMAND_SECONDS, after=before, command=filled)

    def answer_quiz(self, number):
        """Choose the right answer (from the lesson's own file) and submit it."""
        path = next((CONTENT / self.slug / "steps").glob(f"{number:02d}-*.toml"))
        quiz = tomllib.loads(path.read_text())["quiz"]
        step = self.step(number)
        step.locator(f'input[name=choice][value="{quiz["answer"]}"]').check()
        step.get_by_role("button", name="Check answer").click()

    def finish(self):
        """Every step done, all in one page load."""
        states = self.steps().evaluate_all("els => els.map(e => e.dataset.step + ':' + e.dataset.state)")
        assert all(s.endswith(":done") for s in states), states
        assert self.page.evaluate("performance.getEntriesByType('navigation').length") == 1
        return time.monotonic() - self.started


def test_lesson_1_first_containers_by_clicking(page, live_site):
    learner = Learner(page, live_site)
    learner.sign_up("ada-clicks")
    learner.start("first-containers")
    assert learner.steps().count() == 8
    page.click("#check-button")  # nothing done yet: it says it checks, then what it found
    expect(page.locator("#check-result")).to_contain_text("Checked: step 1 is not done yet",
                                                          timeout=30_000)
    expect(page.locator("#lesson-progress")).to_contain_text("0 of 8 steps done")

    # 1-2: one command each.
    for number in (1, 2):
        learner.run_all(number)
        learner.expect_done(number)
    expect(learner.rows("node1")).to_contain_text("Exited (0)")

    # 3: an interactive ubuntu shell; the Run buttons of ls /, ps aux, cat
    # /etc/issue and exit type into it, one after the other at its prompt.
    (start, node, command), *inside = learner.buttons(3)
    learner.click_run(start, node, command)
    assert re.fullmatch(r"root@[0-9a-f]{12}:/# ", learner.prompt("node1"))
    for button, node, command in inside:
        learner.click_run(button, node, command)
    assert "Debian" in learner.text("node1")  # the stand-in's /etc/issue
    assert learner.prompt("node1") == "[node1] ~# "
    learner.expect_done(3)

    # 4: a quiz; the text offers another look: the container's PID 1 is bash.
    ((button, node, command),) = learner.buttons(4)
    learner.click_run(button, node, command)
    learner.type("node1", "ps aux")
    assert re.search(r"^root +1 .*\bbash$", learner.text("node1"), re.M)
    learner.type("node1", "exit")
    learner.answer_quiz(4)
    learner.expect_done(4)

    # 5-7: mydb in the background, its logs and processes, exec.
    for number in (5, 6, 7):
        learner.run_all(number)
        learner.expect_done(number)
    assert re.search(r"mysql .*Ver ", learner.text("node1"))

    # 8: a shell in mydb; ps aux, ls and exit are typed into it by their buttons.
    learner.run_all(8)
    learner.expect_done(8)
    # The server (mysqld), or in its first seconds the entrypoint setting
    # the database up (mariadb-install-db, a bootstrap mariadbd).
    assert re.search(r"\bmysqld\b|mariadb", learner.text("node1")), learner.text("node1")

    seconds = learner.finish()
    # The lesson ends: all steps counted, how long it took, the next lesson.
    expect(page.locator("#lesson-progress")).to_contain_text("8 of 8 steps done")
    complete = page.locator("#lesson-complete")
    expect(complete).to_be_visible()
    expect(complete).to_contain_text(re.compile(r"You did all 8 steps in \d+ min"))
    expect(complete.locator("a.primary")).to_contain_text("Next lesson: ")
    page.click("#check-button")
    expect(page.locator("#check-result")).to_contain_text("Checked: every step is done.")
    print(f"lesson 1 (first-containers) done by clicking in {seconds:.1f}s")


def test_lesson_5_overlay_networking_on_two_nodes(page, live_site):
    learner = Learner(page, live_site)
    learner.sign_up("hopper")
    learner.start("overlay-networking")
    assert learner.steps().count() == 12

    # 1: swarm init on node1, which prints the join command for node2.
    learner.run_all(1)
    learner.expect_done(1)
    expect(learner.rows("node1")).to_contain_text("docker swarm join --token")
    join = re.search(r"docker swarm join --token (SWMTKN-1-[0-9a-z]+-[0-9a-z]+) ([0-9.]+:2377)",
                     learner.text("node1"))
    assert join, learner.text("node1")

    # 2: no button: switch to node2 and paste the command node1 printed.
    assert learner.buttons(2) == []
    learner.open_tab("node2")
    before = learner.mark("node2")
    learner.paste("node2", join.group(0))
    page.keyboard.press("Enter")
    learner.wait_for_shell("node2", after=before, command=join.group(0))
    expect(learner.rows("node2")).to_contain_text("This node joined a swarm as a worker.")
    learner.expect_done(2)

    # 3-5 on node1: the Run buttons switch back to its tab.
    learner.run_all(3)
    learner.expect_done(3)
    assert len(re.findall(r"\bReady\b", learner.text("node1"))) >= 2
    learner.run_all(4)
    learner.expect_done(4)
    # "Run docker network ls on node2 too: no overnet yet."
    learner.open_tab("node2")
    learner.type("node2", "docker network ls")
    assert "overnet" not in learner.text("node2")
    learner.run_all(5)
    learner.expect_done(5)
    assert "Service converged" in learner.text("node1")

    # 6: where the tasks run; note node1's task address from its network inspect.
    learner.run_all(6)
    learner.expect_done(6)
    # (The terminal keeps no scrollback, so the full JSON's Containers part is
    # out of sight by now: the --format command the text offers shows it.)
    found = re.findall(r"^gwuservice\.\S+ ([0-9.]+)/\d+$", learner.text("node1"), re.M)
    assert len(found) == 1, learner.text("node1")
    node1_task = found[0]
    # "Run the same command on node2": overnet is there now, with node2's task.
    learner.open_tab("node2")
    learner.type("node2", "docker network inspect overnet")
    assert re.search(r'"Name": "gwuservice\.', learner.text("node2"))

    # 7 on node2: find the task, open a shell in it, install ping, ping node1's task.
    docker_ps, exec_it, install, ping = learner.buttons(7)
    assert {docker_ps[1], exec_it[1], install[1], ping[1]} == {"node2"}
    learner.click_run(*docker_ps)
    task = re.findall(r"^([0-9a-f]{12}) +ubuntu", learner.text("node2"), re.M)
    assert len(task) == 1, learner.text("node2")
    learner.type_button(7, 1, f"docker exec -it {task[0]} bash")
    assert learner.prompt("node2") == f"root@{task[0]}:/# "
    learner.click_run(*install)
    learner.type_button(7, 3, f"ping -c5 {node1_task}")
    assert re.search(r"5 packets transmitted, 5 received", learner.text("node2")), learner.text("node2")
    # Typed in the task's shell, not node2's own: the check runs once the
    # terminal's output goes quiet after Enter.
    learner.expect_done(7, seconds=30)

    # 8: a quiz; its command runs in the task's shell on node2.
    learner.run_all(8)
    assert "nameserver 127.0.0.11" in learner.text("node2")
    learner.answer_quiz(8)
    learner.expect_done(8)

    # 9: a quiz: both names in the task, exit (typed), then the VIP on node1.
    getent, tasks_getent, vip = learner.buttons(9)
    learner.click_run(*getent)
    learner.click_run(*tasks_getent)
    assert node1_task in learner.text("node2")
    learner.type("node2", "exit")
    assert learner.prompt("node2") == "[node2] ~# "
    assert vip[1] == "node1", "the VIP command is about node1 (only a manager knows services)"
    learner.click_run(*vip)
    assert re.search(r'"Addr":"[0-9.]+/\d+"', learner.text("node1")), learner.text("node1")
    learner.answer_quiz(9)
    learner.expect_done(9)

    # 10-12: clean up, node1, node2, node1.
    for number, node in ((10, "node1"), (11, "node2"), (12, "node1")):
        assert {b[1] for b in learner.buttons(number)} == {node}
        learner.run_all(number)
        learner.expect_done(number)

    seconds = learner.finish()
    print(f"lesson 5 (overlay-networking) done by clicking in {seconds:.1f}s")


def test_lesson_4_published_nginx_opens_through_the_port_link(page, live_site):
    learner = Learner(page, live_site)
    learner.sign_up("linus")
    learner.start("bridge-networking")
    step9 = learner.buttons(9)
    assert step9[0][2] == "docker run --name web1 -d -p 8080:80 nginx"
    learner.click_run(*step9[0])
    learner.expect_done(9)

    link = page.locator('.port-link[data-node="node1"][data-port="8080"]')
    expect(link).to_be_visible(timeout=60_000)
    expect(link).to_contain_text("8080")
    with page.context.expect_page() as opened:
        link.click()
    nginx = opened.value
    nginx.wait_for_load_state()
    expect(nginx.locator("body")).to_contain_text("Welcome to nginx")
    # The app opens on the port's own origin, at its root.
    assert re.fullmatch(r"http://n\d+-8080\.localhost:\d+/", nginx.url), nginx.url

    # Step 11 asks for exactly this visit: the visit itself runs the checks.
    learner.expect_done(11, seconds=30)
    # The text goes on: docker logs web1 shows the browser's request.
    logs, remove = learner.buttons(11)
    learner.click_run(*logs)
    assert re.search(r'"GET / HTTP/1\.1" 200 .*"Mozilla/', learner.text("node1")), learner.text("node1")
    learner.expect_done(11)
    seconds = time.monotonic() - learner.started
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    print(f"lesson 4 (bridge-networking) nginx through the port link in {seconds:.1f}s")

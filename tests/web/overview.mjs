// The dashboard in a real browser (Debian's headless Chromium, driven by playwright-core),
// against a real agent that tests/dashboard.rs started: enter the token, see the runs with
// their states, page through them, filter and reload, open a failed run (why it failed,
// its steps, its log), and save screenshots of the overview and a run page.
//
// Environment (set by tests/dashboard.rs): DASHBOARD_URL, DROVER_TOKEN, FAILED_RUN,
// SUCCEEDED_RUN, RUNNING_RUN, SCREENSHOTS (a directory). Exits non-zero on the first
// failed expectation, saying what it expected.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this through tests/dashboard.rs`);
  }
  return value;
};
const url = env("DASHBOARD_URL");
const token = env("DROVER_TOKEN");
const failed = env("FAILED_RUN");
const succeeded = env("SUCCEEDED_RUN");
const running = env("RUNNING_RUN");
const screenshots = env("SCREENSHOTS");

const TIMEOUT = 15_000;
const step = (what) => console.log(`dashboard: ${what}`);
function expect(condition, what) {
  if (!condition) {
    throw new Error(`expected ${what}`);
  }
}

const profile = mkdtempSync(join(tmpdir(), "drover-chromium-"));
// The flags this machine needs: root (no sandbox), no GPU, and none of Chromium's own
// connections to the outside (the network is closed; they would only fail, many at once).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ],
  viewport: { width: 1366, height: 860 },
  colorScheme: "light",
});
const problems = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  // A script or style the CSP refused, or an uncaught error, fails the test.
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) {
      problems.push(`console: ${msg.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));

  step("the token form, and a clear message for a wrong token");
  await page.goto(url);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("API token").fill("drover_not_a_token");
  await page.getByLabel("API token").press("Enter");
  await page.getByRole("alert").filter({ hasText: "refused this token (401)" }).waitFor();

  step("the right token: the runs, each with its state in words");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Use token" }).click();
  await page.getByRole("heading", { name: "Runs" }).waitFor();
  for (const [id, state] of [
    [failed, "failed"],
    [succeeded, "succeeded"],
    [running, "running"],
  ]) {
    const row = page.locator(`tr[data-run="${id}"]`);
    await row.waitFor();
    const text = await row.innerText();
    expect(text.includes(state), `run ${id}'s row to say ${state}: ${JSON.stringify(text)}`);
  }
  const failedRow = await page.locator(`tr[data-run="${failed}"]`).innerText();
  expect(failedRow.includes("build"), `the failed run's current step to be build: ${failedRow}`);
  expect(failedRow.includes("root"), `the failed run's row to name who asked: ${failedRow}`);
  await page.screenshot({ path: join(screenshots, "dashboard-overview.png"), fullPage: true });

  step("paging with the cursor: two runs a page, older and newer");
  await page.goto(`${url}?limit=2#/`);
  const first = await page.locator("tr[data-run]").evaluateAll((rows) => rows.map((r) => r.dataset.run));
  expect(first.length === 2, `2 runs on the first page, not ${first.length}`);
  await page.getByRole("button", { name: "Older →" }).click();
  await page.waitForURL(/cursor=/);
  await page.locator("tr[data-run]").first().waitFor();
  const second = await page.locator("tr[data-run]").evaluateAll((rows) => rows.map((r) => r.dataset.run));
  expect(second.length >= 1 && second.every((id) => !first.includes(id)), `other runs on the second page: ${first} then ${second}`);
  await page.getByRole("button", { name: "← Newer" }).click();
  await page.waitForURL((u) => !u.search.includes("cursor="));
  await page.locator(`tr[data-run="${first[0]}"]`).waitFor();

  step("a filter in the URL survives a reload; the token too");
  await page.goto(`${url}#/`);
  await page.getByRole("heading", { name: "Runs" }).waitFor();
  await page.getByLabel("failed").check();
  await page.getByRole("button", { name: "Apply" }).click();
  await page.waitForURL(/state=failed/);
  await page.locator(`tr[data-run="${succeeded}"]`).waitFor({ state: "detached" });
  await page.reload();
  await page.locator(`tr[data-run="${failed}"]`).waitFor();
  expect(await page.getByLabel("failed").isChecked(), "the failed box still checked after a reload");
  const states = await page.locator("tr[data-run]").evaluateAll((rows) => rows.map((r) => r.dataset.state));
  expect(states.length > 0 && states.every((s) => s === "failed"), `only failed runs after the reload: ${states}`);

  step("open the failed run from the keyboard: why it failed first, its steps, its log");
  await page.getByRole("link", { name: failed }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Why it failed" }).waitFor();
  const why = await page.locator(".outcome").innerText();
  expect(why.includes("exit") && why.includes("build"), `the failure class and step: ${why}`);
  const order = await page.evaluate(() => {
    const outcome = document.querySelector(".outcome");
    const logs = document.querySelector(".logs");
    return outcome && logs ? outcome.compareDocumentPosition(logs) & Node.DOCUMENT_POSITION_FOLLOWING : 0;
  });
  expect(order !== 0, "the failure before the logs");
  for (const [name, state] of [
    ["checkout", "succeeded"],
    ["build", "failed"],
    ["test", "pending"],
  ]) {
    const text = await page.locator(`tr[data-step="${name}"]`).innerText();
    expect(text.includes(state), `step ${name} ${state}: ${text}`);
  }
  const buildLog = page.locator('.log[data-step="build"] pre');
  await buildLog.filter({ hasText: "cannot find value `widget`" }).waitFor();
  await page.locator('.log[data-step="checkout"] pre').filter({ hasText: "checked out" }).waitFor();
  await page.locator(".chart .u-wrap").waitFor();
  await page.screenshot({ path: join(screenshots, "dashboard-run.png"), fullPage: true });

  step("back to the list keeps the filter");
  await page.getByRole("link", { name: "← All runs" }).click();
  await page.locator(`tr[data-run="${failed}"]`).waitFor();
  expect(new URL(page.url()).search.includes("state=failed"), `the filter kept: ${page.url()}`);

  step("a running run's page and its log as it stands");
  await page.goto(`${url}#/runs/${running}`);
  await page.locator('.log[data-step="work"] pre').filter({ hasText: "tick" }).waitFor();

  step("a token the agent refuses brings the form back with a 401 message");
  await page.evaluate(() => sessionStorage.setItem("drover.token", "drover_revoked"));
  await page.reload();
  await page.getByRole("alert").filter({ hasText: "refused the token (401)" }).waitFor();

  expect(problems.length === 0, `no CSP violations or page errors: ${problems.join("; ")}`);
  step("all good");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

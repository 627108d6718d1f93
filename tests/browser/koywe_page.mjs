// Drives the Koywe page in Airflow's UI as a person would, in Debian's chromium (headless) through
// playwright-core: sign in, open "Koywe" from Airflow's navigation, read the counts, search a Koywe
// reference, read a document's generations, attempts and the tax bureau's answer, open a run's rendered
// report, and trigger the retry DAG from a document's button through the prefilled form.
//
// Run by tests/ui/test_browser.py, which starts the API server and passes KOYWE_BROWSER_CONFIG (JSON:
// url, user, password, screenshots, ids, daily_run). Prints one JSON line of what it saw; exits 1 with
// the reason (and a screenshot "failure.png") when something a person should see is not there.
import { chromium } from "playwright-core";
import path from "node:path";

const cfg = JSON.parse(process.env.KOYWE_BROWSER_CONFIG);
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// Generous: the machine is shared and Airflow's UI bundle is large.
const TIMEOUT = Number(process.env.KOYWE_BROWSER_TIMEOUT_MS || 120000);
const seen = {};

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(page, name) {
  const file = path.join(cfg.screenshots, name);
  await page.screenshot({ path: file, fullPage: false });
  (seen.screenshots ||= []).push(file);
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_FLAGS, headless: true });
const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
context.setDefaultTimeout(TIMEOUT);
context.setDefaultNavigationTimeout(TIMEOUT);
const page = await context.newPage();
const requests = [];
page.on("request", (request) => requests.push(request.url()));

try {
  // 1. Airflow sends a person without a session to its login page; sign in there.
  await page.goto(`${cfg.url}/`);
  await page.locator('input[name="username"]').fill(cfg.user);
  await page.locator('input[name="password"]').fill(cfg.password);
  await page.locator('button[type="submit"]').click();
  await page.waitForURL((url) => !url.pathname.includes("/auth/login"));

  // 2. "Koywe" in Airflow's own navigation opens the page (an iframe at /plugin/koywe).
  const navLink = page.locator('a[href$="plugin/koywe"]').first();
  await navLink.waitFor();
  await navLink.click();
  await page.waitForURL((url) => url.pathname.endsWith("/plugin/koywe") || url.pathname.includes("/plugin/koywe/"));
  const frame = page.frameLocator('iframe[title="Koywe"]');

  // 3. Counts by state per account, country and day.
  const totals = frame.locator("#counts tfoot");
  await totals.waitFor();
  seen.totals = {};
  for (const state of ["issued", "rejected", "unknown", "invalid", "dead"]) {
    seen.totals[state] = (await totals.locator(`[data-state="${state}"]`).innerText()).trim();
  }
  seen.count_rows = await frame.locator("#counts tbody tr").count();
  seen.countries = await frame.locator("#counts tbody td:nth-child(3)").allInnerTexts();
  check(seen.totals.issued === "4" && seen.totals.dead === "1", `totals ${JSON.stringify(seen.totals)}`);
  check(seen.countries.includes("Chile") && seen.countries.includes("Peru"), `countries ${seen.countries}`);
  await shot(page, "1-counts.png");

  // 4. Search by a later generation's Koywe reference: the one hit opens the document's page.
  await frame.locator('input[name="q"]').fill("CL-0003~2");
  await frame.locator('input[name="q"]').press("Enter");
  await frame.locator("h1", { hasText: "CL-0003" }).waitFor();
  seen.search_landed_on = await frame.locator("h1").innerText();
  seen.generations = await frame.locator("#generations tbody tr").count();
  seen.attempts = await frame.locator("#attempts tbody tr").count();
  seen.bureau = await frame.locator("#generations td.bureau").first().innerText();
  seen.summary = await frame.locator("#summary").innerText();
  check(seen.generations === 2, `generations ${seen.generations}`);
  check(seen.attempts >= 2, `attempts ${seen.attempts}`);
  check(seen.bureau.includes("no autorizado"), `bureau ${seen.bureau}`);
  check(!seen.summary.includes("@"), "the summary shows contact data");
  // Airflow's address bar follows the iframe (a deep link a person can share).
  seen.top_url_after_search = new URL(page.url()).pathname;
  await shot(page, "2-document.png");

  // 5. A run's failures with their reasons, and its report's Markdown rendered.
  await frame.locator("header nav a", { hasText: "Runs" }).click();
  await frame.locator("h1", { hasText: "Runs that wrote to the ledger" }).waitFor();
  await frame.locator(`a[href="runs/${encodeURIComponent(cfg.daily_run)}"]`).click();
  const report = frame.locator("#report");
  await report.waitFor();
  seen.report_heading = await report.locator("h1").innerText();
  seen.report_tables = await report.locator("table").count();
  seen.run_failures = await frame.locator("table.list tbody tr td:first-child").allInnerTexts();
  check(seen.report_heading.includes("Koywe issuance report"), `report ${seen.report_heading}`);
  check(seen.report_tables >= 2, `report tables ${seen.report_tables}`);
  check(seen.run_failures.includes("PE-0002") && seen.run_failures.includes("CL-0004"), `failures ${seen.run_failures}`);
  await report.scrollIntoViewIfNeeded();
  await shot(page, "3-run-report.png");

  // 6. A dead document's button leads to the retry DAG's own Params, prefilled; submitting starts the run.
  await page.goto(`${cfg.url}/plugin/koywe/koywe-ledger/documents/${cfg.ids["CL-0004"]}`);
  const button = frame.locator("#actions a", { hasText: "Re-queue" });
  await button.click();
  const form = frame.locator('#trigger-form[data-ready="1"]');
  await form.waitFor();
  seen.form_references = await frame.locator("#param-references").inputValue();
  seen.form_requeue = await frame.locator("#param-requeue_rejected").isChecked();
  seen.form_fields = await frame.locator("#params .param").count();
  check(seen.form_references === "CL-0004", `references field ${seen.form_references}`);
  check(seen.form_requeue === true, "requeue_rejected not ticked");
  // A paused DAG: the form offers to unpause it (ticked), as Airflow's own trigger form does.
  seen.form_unpause_offered = (await frame.locator("#unpause").count()) ? await frame.locator("#unpause").isChecked() : null;
  await shot(page, "4-trigger-form.png");
  await frame.locator("#trigger-submit").click();
  const ok = frame.locator("#trigger-ok");
  await ok.waitFor();
  seen.trigger_result = await ok.innerText();
  seen.run_id = seen.trigger_result.match(/^Run (\S+) of/)?.[1];
  check(seen.run_id, `no run id in ${seen.trigger_result}`);
  await shot(page, "5-triggered.png");

  // 7. "open it in Airflow" leaves the iframe for Airflow's own page of that run.
  await ok.locator("a.airflow").click();
  await page.waitForURL((url) => url.pathname.includes("/dags/koywe_retry_failed_documents/runs/"));
  seen.airflow_run_page = decodeURIComponent(new URL(page.url()).pathname);
  await page.getByText("koywe_retry_failed_documents").first().waitFor();
  await shot(page, "6-airflow-run.png");

  // Nothing left this machine's Airflow: no CDN, no other host.
  const origin = new URL(cfg.url).origin;
  const originOf = (u) => {
    try {
      return new URL(u).origin; // a blob: URL's origin is the page's
    } catch {
      return u;
    }
  };
  seen.foreign_requests = requests.filter((u) => !u.startsWith("data:") && !u.startsWith("about:") && originOf(u) !== origin);
  check(seen.foreign_requests.length === 0, `requests to other hosts: ${seen.foreign_requests}`);
  console.log(JSON.stringify({ ok: true, seen }));
} catch (err) {
  try {
    await page.screenshot({ path: path.join(cfg.screenshots, "failure.png"), fullPage: true });
  } catch {}
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err), seen, url: page.url() }));
  process.exitCode = 1;
} finally {
  await browser.close();
}

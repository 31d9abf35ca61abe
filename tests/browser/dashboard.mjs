// Opens the gatehouse dashboard in the system Chromium (playwright-core, no browser download)
// and checks what a person would see: a registered instance, a loaded plugin, and a chart that
// moves between two reads; no request elsewhere, no CSP or script error; without the token, a
// clear message and a form that takes it. Saves a screenshot. Run by tests/all/dashboard_browser.rs:
//
//   node dashboard.mjs <dashboard url, with #token=...> <instance ip:port> <plugin> <route> <screenshot.png>
//
// Chromium comes from $GATEHOUSE_CHROMIUM, else /usr/bin/chromium. Prints one JSON line and
// exits 0 when every check passed; otherwise prints why on stderr and exits 1.
import { chromium } from "playwright-core";

const [url, instance, plugin, route, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node dashboard.mjs <url> <instance> <plugin> <route> <screenshot.png>");
  process.exit(2);
}
const executablePath = process.env.GATEHOUSE_CHROMIUM || "/usr/bin/chromium";
const origin = new URL(url).origin;

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  // Everything the page loads must come from the admin listener itself: no CDN, no beacon.
  const elsewhere = [];
  page.on("request", (r) => { if (!r.url().startsWith(origin)) elsewhere.push(r.url()); });
  // A CSP violation or a script error shows up as a console error.
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`); });

  await page.goto(url);
  const wait = { timeout: 20000 };
  await page.waitForSelector(`#services tr[data-instance="${instance}"]`, wait);
  const instanceRow = (await page.textContent(`#services tr[data-instance="${instance}"]`)).trim();
  await page.waitForSelector(`#plugins tr[data-plugin="${plugin}"]`, wait);
  const pluginRow = (await page.textContent(`#plugins tr[data-plugin="${plugin}"]`)).trim();
  if (!/loaded/.test(pluginRow)) problems.push(`plugin ${plugin} is not shown loaded: ${pluginRow}`);

  // The rate chart of the route: its line must change between two reads (the page redraws
  // every 2 s and the series shifts by a second each time while traffic flows).
  const chart = `.chart.rate[data-route="${route}"] path`;
  await page.waitForSelector(chart, { ...wait, state: "attached" });
  const first = await page.getAttribute(chart, "d");
  const moved = await page
    .waitForFunction(
      ([selector, before]) => {
        const path = document.querySelector(selector);
        return path && path.getAttribute("d") !== before && path.getAttribute("d") !== "";
      },
      [chart, first],
      { timeout: 20000 },
    )
    .then(() => true, () => false);
  const second = await page.getAttribute(chart, "d");
  if (!moved) problems.push(`the ${route} rate chart did not change in 20 s: ${second}`);
  if (!second || !second.includes("L")) problems.push(`the ${route} rate chart draws no line: ${second}`);
  if (!(await page.getAttribute(`#token-form`, "hidden") !== null)) {
    problems.push("the token form is shown: the token was not taken from the URL fragment");
  }
  if (page.url().includes("token=")) problems.push(`the token stays in the address bar: ${page.url()}`);
  if (elsewhere.length) problems.push(`requests left the admin listener: ${elsewhere.join(", ")}`);

  await page.screenshot({ path: screenshot, fullPage: true });

  // Without the token (a fresh context: nothing in sessionStorage) the page says what is
  // missing and asks for it; the token typed into the form brings the data.
  const bare = await (await browser.newContext()).newPage();
  await bare.goto(url.split("#")[0]);
  await bare.waitForSelector("#token-form:not([hidden])", wait);
  const refused = await bare.textContent("#status");
  if (!/needs a token/.test(refused)) problems.push(`without a token the page says: ${refused}`);
  if (!(await bare.$eval("#status", (s) => s.classList.contains("error")))) {
    problems.push("the missing token is not shown as an error");
  }
  await bare.fill("#token", new URLSearchParams(new URL(url).hash.slice(1)).get("token"));
  await bare.click("#token-form button");
  await bare.waitForSelector(`#services tr[data-instance="${instance}"]`, wait);
  console.log(JSON.stringify({ instanceRow, pluginRow, first, second, screenshot }));
} catch (e) {
  problems.push(String(e && e.stack || e));
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}

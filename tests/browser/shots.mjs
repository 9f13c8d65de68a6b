// Screenshots of the desk and officer views for the README, from a running service (a
// `dissuade demo` is the usual one; docs/screenshots/ holds what it took last). It signs in
// through the sign-in page like a user, looks, and submits nothing.
//
//     cd tests/browser && BASE_URL=http://127.0.0.1:8080 STATION_TOKEN=... OFFICER_TOKEN=... \
//         CENTRE_TOKEN=... SHOTS_DIR=../../docs/screenshots node shots.mjs
//
// Env: BASE_URL, STATION_TOKEN (a station desk), OFFICER_TOKEN (an officer with open tasks),
// CENTRE_TOKEN, SHOTS_DIR (made if missing), CHROMIUM (default /usr/bin/chromium), and
// WEB_DIR (optional): serve the pages and /assets/* from this folder (the checkout's web/)
// in place of the copies compiled into the binary, with the service's own headers (CSP
// included), to take screenshots of changes to web/ before the binary is built again.
//
// Writes, in SHOTS_DIR:
//   desk-station.png  the station's desk, 1440x900
//   desk-cell.png     the same desk with a cell with open tasks clicked: its panel open
//   desk-centre.png   the centre's desk of the whole city, 1440x900
//   officer.png       the officer's task list, 390x844 at 2x
//   officer-task.png  the officer's first open task opened: the call link, script, outcomes
//
// Prints progress as JSON lines on stdout, and last one line
// {"ok":true,"centre":{firstRenderMs,cells,tasks},"station":{...},"shots":[...]}, or
// {"ok":false,"step":...,"error":...} (exit 1). Any CSP report, uncaught error or third-party
// request on a page fails the run. Everything is bounded: 30 s a wait, 3 minutes in all.
import fs from 'node:fs';
import path from 'node:path';

const WAIT = 30_000;
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

let step = 'setup';
let browser = null;

async function finish(code) {
    if (browser) {
        await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 10_000))]);
    }
    process.exit(code);
}

function fail(error) {
    out({ ok: false, step, error: String(error && error.message ? error.message : error).slice(0, 2000) });
    return finish(1);
}

function check(cond, what) {
    if (!cond) throw new Error(what);
}

async function main() {
    let chromium;
    try {
        ({ chromium } = await import('playwright-core'));
    } catch {
        throw new Error('playwright-core is not installed in tests/browser/node_modules (scripts/install-test-deps runs npm ci there)');
    }
    const exe = process.env.CHROMIUM || '/usr/bin/chromium';
    check(fs.existsSync(exe), `no Chromium at ${exe} (scripts/install-test-deps installs Debian's chromium; or set CHROMIUM)`);

    step = 'env';
    const env = {};
    for (const k of ['BASE_URL', 'STATION_TOKEN', 'OFFICER_TOKEN', 'CENTRE_TOKEN', 'SHOTS_DIR']) {
        check(process.env[k], `${k} is not set`);
        env[k] = process.env[k];
    }
    const base = env.BASE_URL.replace(/\/+$/, '');
    const origin = new URL(base).origin;
    const tokens = [env.STATION_TOKEN, env.OFFICER_TOKEN, env.CENTRE_TOKEN];
    fs.mkdirSync(env.SHOTS_DIR, { recursive: true });
    const shot = (name) => path.join(env.SHOTS_DIR, name);
    const shots = [];

    step = 'launch';
    // The same launch as web.mjs: a fresh profile, no sandbox, nothing reaching the internet.
    browser = await chromium.launch({
        executablePath: exe,
        headless: true,
        chromiumSandbox: false,
        timeout: WAIT,
        args: [
            '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
        ],
    });
    out({ step: 'launch', ok: true, chromium: browser.version(), web_dir: process.env.WEB_DIR || null });

    const webDir = process.env.WEB_DIR ? path.resolve(process.env.WEB_DIR) : null;
    const PAGES = { '/': 'index.html', '/desk': 'desk.html', '/officer': 'officer.html' };
    function localFile(u) {
        const p = new URL(u).pathname;
        if (PAGES[p]) return path.join(webDir, PAGES[p]);
        if (/^\/assets\/[A-Za-z0-9._-]+$/.test(p)) return path.join(webDir, p);
        return null;
    }

    const problems = [];
    async function newContext(name, options) {
        const ctx = await browser.newContext({ baseURL: base, ...options });
        if (webDir) {
            await ctx.route((u) => u.origin === origin && localFile(u.href) !== null, async (route) => {
                const file = localFile(route.request().url());
                const res = await route.fetch();
                if (!res.ok() || !fs.existsSync(file)) return route.fulfill({ response: res });
                return route.fulfill({ response: res, body: fs.readFileSync(file) });
            });
        }
        ctx.setDefaultTimeout(WAIT);
        ctx.setDefaultNavigationTimeout(WAIT);
        ctx.on('request', (req) => {
            const u = req.url();
            if (!u.startsWith('data:') && new URL(u).origin !== origin) problems.push(`${name}: a third-party request to ${u}`);
            for (const t of tokens) if (t && u.includes(t)) problems.push(`${name}: a token in the URL`);
        });
        ctx.on('page', (page) => {
            page.on('console', (m) => {
                if (/Content.Security.Policy/i.test(m.text())) problems.push(`${name}: CSP: ${m.text()}`);
                // The sign-in page asks GET /api/me first, and a 401 there is the expected answer.
                else if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`${name}: console error: ${m.text()}`);
            });
            page.on('pageerror', (e) => problems.push(`${name}: uncaught: ${e.message}`));
        });
        return ctx;
    }
    async function signIn(page, token, expectPath) {
        await page.goto('/');
        await page.locator('#signin-token').fill(token);
        await page.locator('#signin-submit').click();
        await page.waitForURL((u) => new URL(u).pathname === expectPath);
    }
    // No error banner anywhere on the page.
    async function noErrors(page, what) {
        const errs = await page.$$eval('.error, .page-error, [role="alert"]', (els) =>
            els.filter((e) => !e.hidden && e.offsetParent !== null && e.textContent.trim()).map((e) => e.textContent.trim()));
        check(errs.length === 0, `${what} shows an error: ${errs.join(' | ')}`);
    }
    // The desk, signed in and drawn: the map, the list, the figures and the live stream.
    async function openDesk(name, token) {
        const ctx = await newContext(name, { viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
        const page = await ctx.newPage();
        await signIn(page, token, '/desk');
        await page.locator('#map [data-grid-id]').first().waitFor({ state: 'attached' });
        await page.waitForFunction(() => window.__dissuade && window.__dissuade.firstRenderMs !== null, null, { timeout: WAIT });
        await page.locator('#figures td[data-figure="tasks"]').first().waitFor({ state: 'attached' });
        await page.waitForFunction(() => document.getElementById('live').textContent.includes('Live'), null, { timeout: WAIT });
        // A moment for the figures (sent every 5 s) and any live events to land.
        await page.waitForTimeout(1500);
        await noErrors(page, name);
        const m = await page.evaluate(() => ({
            firstRenderMs: window.__dissuade.firstRenderMs,
            cells: window.__dissuade.cells,
            tasks: window.__dissuade.tasks,
            updates: window.__dissuade.updates,
            lastUpdateMs: window.__dissuade.lastUpdateMs,
        }));
        return { ctx, page, m };
    }

    // The centre's desk of the whole city.
    step = 'centre-desk';
    const centre = await openDesk('centre desk', env.CENTRE_TOKEN);
    await centre.page.screenshot({ path: shot('desk-centre.png') });
    shots.push('desk-centre.png');
    out({ step: 'centre-desk', ok: true, ...centre.m });
    await centre.ctx.close();

    // The station's desk.
    step = 'station-desk';
    const station = await openDesk('station desk', env.STATION_TOKEN);
    await station.page.screenshot({ path: shot('desk-station.png') });
    shots.push('desk-station.png');
    out({ step: 'station-desk', ok: true, ...station.m });

    // The same desk with a cell with open tasks clicked on the map (overdue ones first).
    step = 'station-cell';
    const desk = station.page;
    const cell = desk.locator('#map path.c-overdue, #map path.c-busy, #map path.c-open').first();
    if ((await cell.count()) === 0) {
        out({ step: 'station-cell', ok: false, skipped: 'no cell with open tasks on the station desk' });
    } else {
        const gridId = await cell.getAttribute('data-grid-id');
        try {
            await cell.click({ timeout: 5000 });
        } catch {
            // The middle of a cell's box may fall outside an odd-shaped cell: click it in script.
            await cell.dispatchEvent('click');
        }
        await desk.locator('#cell-panel h3').first().waitFor({ state: 'visible' });
        await desk.waitForFunction(() => !document.querySelector('#cell-body').textContent.includes('Loading'), null, { timeout: WAIT });
        await noErrors(desk, 'station desk cell panel');
        const panelTasks = await desk.locator('#cell-body [data-panel-task-id]').count();
        await desk.waitForTimeout(300);
        await desk.screenshot({ path: shot('desk-cell.png') });
        shots.push('desk-cell.png');
        out({ step: 'station-cell', ok: true, grid_id: gridId, panel_tasks: panelTasks });
    }
    await station.ctx.close();

    // The officer on a phone: the list, then the first open task opened (nothing sent).
    step = 'officer';
    const phone = await newContext('officer', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    const officer = await phone.newPage();
    await signIn(officer, env.OFFICER_TOKEN, '/officer');
    await officer.waitForFunction(() => document.getElementById('live').textContent.includes('Live'), null, { timeout: WAIT });
    const first = officer.locator('#task-list [data-task-id]').first();
    await first.waitFor({ state: 'visible' });
    await noErrors(officer, 'officer list');
    const cards = await officer.locator('#task-list [data-task-id]').count();
    await officer.screenshot({ path: shot('officer.png') });
    shots.push('officer.png');
    out({ step: 'officer', ok: true, cards });

    step = 'officer-task';
    const taskId = await first.getAttribute('data-task-id');
    await first.locator('button').tap();
    const tel = officer.locator('#task-detail a[href^="tel:"]');
    await tel.waitFor({ state: 'visible' });
    await officer.locator('button[data-outcome="reached_by_phone"]').waitFor({ state: 'visible' });
    check(((await officer.locator('#detail-script').textContent()) || '').trim().length > 1, 'the task has no script');
    await noErrors(officer, 'officer task');
    await officer.screenshot({ path: shot('officer-task.png'), fullPage: true });
    shots.push('officer-task.png');
    out({ step: 'officer-task', ok: true, task_id: taskId, tel: (await tel.getAttribute('href')).replace(/\d{4}$/, '****') });
    await phone.close();

    step = 'page-health';
    check(problems.length === 0, problems.slice(0, 10).join('; '));
    out({ ok: true, centre: centre.m, station: station.m, shots: shots.map(shot) });
    return finish(0);
}

setTimeout(() => {
    fail(new Error('the screenshots took over 3 minutes'));
}, 180_000);
main().catch(fail);

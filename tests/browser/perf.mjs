// The centre's desk at city scale, in headless Chromium against a running service (for
// example `dissuade demo`): first render of the whole grid and every open task, then the cost
// of applying the live stream of changes, and the long tasks (over 50 ms) the page had.
//
//     BASE_URL=http://127.0.0.1:8080 CENTRE_TOKEN=... node tests/browser/perf.mjs
//
// Prints one JSON line: runs (first render per reload, cells, tasks), the update cost over
// SAMPLE_S seconds of live events (median, p90, max of the last update's cost, sampled every
// 100 ms), and the long tasks. RUNS (default 3) and SAMPLE_S (default 20) tune it.
import { chromium } from 'playwright-core';

const base = process.env.BASE_URL;
const token = process.env.CENTRE_TOKEN;
if (!base || !token) {
    console.error('BASE_URL and CENTRE_TOKEN are needed');
    process.exit(2);
}
const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
    const ctx = await browser.newContext({ baseURL: base, viewport: { width: 1440, height: 900 } });
    await ctx.addInitScript(() => {
        window.__long = [];
        new PerformanceObserver((l) => {
            for (const e of l.getEntries()) window.__long.push(Math.round(e.duration));
        }).observe({ type: 'longtask', buffered: true });
    });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto('/');
    await page.fill('#signin-token', token);
    await page.click('#signin-submit');
    await page.waitForURL((u) => u.pathname === '/desk', { timeout: 30_000 });
    const runs = [];
    for (let i = 0; i < +(process.env.RUNS || 3); i++) {
        if (i) await page.reload();
        await page.waitForFunction(() => window.__dissuade && window.__dissuade.firstRenderMs != null,
            null, { timeout: 60_000 });
        const s = await page.evaluate(() => ({ ...window.__dissuade, long: window.__long.slice() }));
        runs.push({ firstRenderMs: Math.round(s.firstRenderMs), cells: s.cells, tasks: s.tasks,
            longTasksMs: s.long });
    }
    await page.evaluate(() => { window.__long = []; });
    const before = await page.evaluate(() => window.__dissuade.updates);
    const samples = [];
    const until = Date.now() + 1000 * +(process.env.SAMPLE_S || 20);
    while (Date.now() < until) {
        await page.waitForTimeout(100);
        const v = await page.evaluate(() => window.__dissuade.lastUpdateMs);
        if (v != null) samples.push(v);
    }
    const after = await page.evaluate(() => ({ updates: window.__dissuade.updates,
        tasks: window.__dissuade.tasks, long: window.__long.slice() }));
    samples.sort((a, b) => a - b);
    const q = (f) => (samples.length ? Math.round(samples[Math.min(samples.length - 1,
        Math.floor(f * samples.length))] * 10) / 10 : null);
    console.log(JSON.stringify({
        runs,
        live: { updates: after.updates - before, tasksAtEnd: after.tasks, lastUpdateMs: {
            median: q(0.5), p90: q(0.9), max: q(1) }, longTasksMs: after.long },
        errors,
    }));
} finally {
    await browser.close();
}

// The duty desk: a live map of the area's police grid, the task list beside it, a cell's
// details on click and the area's reach figures. See docs/web.md.
//
// Built for the whole sample city (3,332 cells) with 10,000 open tasks: the SVG is built once
// and a task event only changes the class of its own cell; the list keeps a sorted array,
// updated by binary search per event, and draws only the rows in view, at most once a frame.
import {
    api, loadMe, liveEvents, setServerTime, now, wireSignOut, isOpen, deadlineText, clock,
    percent, int, h, LEVEL_LABEL, STATE_LABEL, OUTCOME_LABEL, ROLE_LABEL,
} from './common.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const NO_GRID = '未定位 No cell';
const ROW_H = 40; // px, the same as .row's height in app.css
const OVERSCAN = 12;

// Measurements for the browser test and for anyone curious (docs/web.md, issue 12).
const stats = { firstRenderMs: null, lastUpdateMs: null, updates: 0, cells: 0, tasks: 0 };
window.__dissuade = stats;
// For the browser test: scroll the list to a listed task (rows are drawn only in view).
Object.defineProperty(stats, 'reveal', {
    enumerable: false,
    value: (id) => {
        const i = list.findIndex((t) => t.task_id === id);
        if (i < 0) return false;
        listEl.scrollTop = Math.max(0, i * ROW_H - listEl.clientHeight / 2);
        scheduleRender();
        return true;
    },
});

const $ = (id) => document.getElementById(id);
const mapEl = $('map');
const listEl = $('task-list');
const rowsEl = $('task-rows');

let me = null;
let stationNames = new Map();

// --- state ----------------------------------------------------------------------------------

const area = new Map(); // task_id -> Task, the open tasks of the area: they colour the map
const counts = new Map(); // grid_id -> {open, overdue}
const cellEls = new Map(); // grid_id -> <path>
const cellInfo = new Map(); // grid_id -> {name, station_id}

let filter = { station: '', level: '', state: 'open' };
let list = []; // the tasks the filter selects, sorted by (deadline, task_id)
let listIds = new Set();
let listGen = 0; // bumps when a fetch replaces the list, so late answers are dropped

// --- the map ----------------------------------------------------------------------------------

let viewBox = [0, 0, 100, 100];
let view = null; // the current [x, y, w, h] after zoom and pan
let selectedPath = null;

function cellClass(c) {
    if (!c || (c.open === 0 && c.overdue === 0)) return 'cell';
    if (c.overdue > 0) return 'cell c-overdue';
    if (c.open >= 3) return 'cell c-busy';
    return 'cell c-open';
}

function paintCell(gridId) {
    const el = cellEls.get(gridId);
    if (!el) return;
    const cls = cellClass(counts.get(gridId));
    if (el.getAttribute('class') !== cls) el.setAttribute('class', cls);
    if (gridId === hovered) showHover(gridId);
}

function count(t, d) {
    let c = counts.get(t.grid_id);
    if (!c) counts.set(t.grid_id, (c = { open: 0, overdue: 0 }));
    c.open += d;
    if (t.overdue) c.overdue += d;
}

function buildMap(grid) {
    // A little room around the area, so its edge cells do not touch the frame.
    const [x, y, w, hgt] = grid.view_box;
    const pad = Math.max(w, hgt) * 0.03;
    viewBox = [x - pad, y - pad, w + 2 * pad, hgt + 2 * pad];
    view = viewBox.slice();
    setView();
    const cellsG = document.createElementNS(SVG_NS, 'g');
    cellsG.setAttribute('class', 'cells');
    for (const c of grid.cells) {
        const p = document.createElementNS(SVG_NS, 'path');
        p.setAttribute('d', c.path);
        p.setAttribute('class', 'cell');
        p.dataset.gridId = c.grid_id;
        cellEls.set(c.grid_id, p);
        cellInfo.set(c.grid_id, { name: c.name, station_id: c.station_id, path: c.path });
        cellsG.append(p);
    }
    const distG = document.createElementNS(SVG_NS, 'g');
    distG.setAttribute('class', 'districts');
    for (const d of grid.districts || []) {
        const p = document.createElementNS(SVG_NS, 'path');
        p.setAttribute('d', d.path);
        p.setAttribute('class', 'district');
        p.dataset.district = d.code;
        distG.append(p);
    }
    selectedPath = document.createElementNS(SVG_NS, 'path');
    selectedPath.setAttribute('class', 'selected');
    mapEl.replaceChildren(cellsG, distG, selectedPath);
    stats.cells = grid.cells.length;
}

function setView() {
    mapEl.setAttribute('viewBox', view.map((v) => +v.toFixed(3)).join(' '));
}

// Where a client point falls in the SVG's user units.
function toUser(clientX, clientY) {
    const m = mapEl.getScreenCTM();
    if (!m) return null;
    const pt = new DOMPoint(clientX, clientY).matrixTransform(m.inverse());
    return [pt.x, pt.y];
}

function zoomAt(clientX, clientY, factor) {
    const u = toUser(clientX, clientY);
    if (!u) return;
    const w = Math.min(viewBox[2] * 1.5, Math.max(viewBox[2] / 200, view[2] * factor));
    const f = w / view[2];
    const hgt = view[3] * f;
    view = [u[0] - (u[0] - view[0]) * f, u[1] - (u[1] - view[1]) * f, w, hgt];
    setView();
}

function wireMap() {
    mapEl.addEventListener(
        'wheel',
        (ev) => {
            ev.preventDefault();
            zoomAt(ev.clientX, ev.clientY, ev.deltaY > 0 ? 1.25 : 0.8);
        },
        { passive: false }
    );
    let drag = null;
    let moved = false;
    mapEl.addEventListener('pointerdown', (ev) => {
        if (ev.button !== 0) return;
        drag = { x: ev.clientX, y: ev.clientY, view: view.slice(), ctm: mapEl.getScreenCTM() };
        moved = false;
    });
    mapEl.addEventListener('pointermove', (ev) => {
        if (drag) {
            const dx = ev.clientX - drag.x;
            const dy = ev.clientY - drag.y;
            if (!moved && Math.hypot(dx, dy) < 5) return;
            if (!moved) mapEl.setPointerCapture(ev.pointerId);
            moved = true;
            const scale = drag.ctm ? drag.ctm.a : 1;
            view = [drag.view[0] - dx / scale, drag.view[1] - dy / scale, view[2], view[3]];
            setView();
            return;
        }
        const id = ev.target.dataset && ev.target.dataset.gridId;
        hover(id);
    });
    const end = () => {
        drag = null;
    };
    mapEl.addEventListener('pointerup', end);
    mapEl.addEventListener('pointercancel', end);
    mapEl.addEventListener('pointerleave', () => hover(null));
    mapEl.addEventListener('click', (ev) => {
        if (moved) {
            moved = false;
            return;
        }
        const id = ev.target.dataset && ev.target.dataset.gridId;
        if (id) selectCell(id);
    });
    $('map-reset').addEventListener('click', () => {
        view = viewBox.slice();
        setView();
    });
}

let hovered = null;
function hover(id) {
    if (id === hovered) return;
    hovered = id;
    showHover(id);
}

function showHover(id) {
    const out = $('map-hover');
    if (!id) {
        out.textContent = '';
        return;
    }
    const info = cellInfo.get(id);
    const c = counts.get(id) || { open: 0, overdue: 0 };
    out.textContent = `${info ? info.name : id} · 待处理 open ${c.open} · 超时 overdue ${c.overdue}`;
}

// --- the cell panel ------------------------------------------------------------------------

let panelCell = null;
let panelGen = 0;

async function selectCell(gridId) {
    const info = cellInfo.get(gridId);
    if (info) selectedPath.setAttribute('d', info.path);
    panelCell = gridId;
    const gen = ++panelGen;
    const panel = $('cell-panel');
    const body = $('cell-body');
    panel.hidden = false;
    body.replaceChildren(h('h2', null, info ? info.name : gridId), h('p', { class: 'muted' }, '加载中 Loading…'));
    let cell;
    try {
        cell = await api(`/api/cells/${encodeURIComponent(gridId)}`);
    } catch (e) {
        if (gen === panelGen) body.replaceChildren(h('h2', null, gridId), h('p', { class: 'error' }, e.message));
        return;
    }
    if (gen !== panelGen) return;
    renderPanel(cell);
}

function renderPanel(cell) {
    const body = $('cell-body');
    const station = stationNames.get(cell.station_id) || cell.station_id;
    body.replaceChildren(
        h('h2', null, cell.name),
        h('p', { class: 'muted' }, `${cell.grid_id} · ${station}`),
        h('h3', null, '民警 Officers'),
        cell.officers.length
            ? h('ul', { class: 'plain' }, cell.officers.map((o) =>
                h('li', null, h('strong', null, o.name), ' ', h('span', { class: 'muted' }, ROLE_LABEL[o.role] || o.role))))
            : h('p', { class: 'muted' }, '无 None'),
        h('h3', null, `待处理 Open tasks (${cell.tasks.length})`),
        cell.tasks.length
            ? h('ul', { class: 'plain' }, cell.tasks.map((t) => {
                const d = deadlineText(t);
                return h('li', { dataset: { panelTaskId: t.task_id } },
                    h('span', { class: `lvl lvl-${t.level}` }, LEVEL_LABEL[t.level] || t.level), ' ',
                    h('span', { class: d.late ? 'late' : '' }, d.text), ' ',
                    h('span', { class: 'mono' }, t.victim), ' ',
                    h('span', { class: 'muted' }, STATE_LABEL[t.state] || t.state));
            }))
            : h('p', { class: 'muted' }, '无 None'),
        h('h3', null, '最近结果 Recent outcomes'),
        cell.recent.length
            ? h('ul', { class: 'plain' }, cell.recent.map((r) =>
                h('li', null, h('span', { class: 'muted' }, clock(r.at)), ' ', OUTCOME_LABEL[r.outcome] || r.outcome)))
            : h('p', { class: 'muted' }, '无 None')
    );
}

let panelRefresh = null;
function refreshPanelSoon(gridId) {
    if (gridId !== panelCell || panelRefresh) return;
    panelRefresh = setTimeout(() => {
        panelRefresh = null;
        if (panelCell) selectCell(panelCell);
    }, 500);
}

// --- the task list -------------------------------------------------------------------------

function before(a, b) {
    return a.deadline < b.deadline || (a.deadline === b.deadline && a.task_id < b.task_id);
}

function byDeadline(a, b) {
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

// The API sorts by deadline already; sort only where it is not in (deadline, task_id) order.
function sortList() {
    for (let i = 1; i < list.length; i++) {
        if (before(list[i], list[i - 1])) {
            list.sort(byDeadline);
            return;
        }
    }
}

function indexFor(t) {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (before(list[mid], t)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

function listRemove(t) {
    let i = indexFor(t);
    if (list[i] && list[i].task_id === t.task_id) {
        list.splice(i, 1);
    } else {
        // Not where its deadline says (should not happen): fall back to a scan.
        i = list.findIndex((x) => x.task_id === t.task_id);
        if (i >= 0) list.splice(i, 1);
    }
    listIds.delete(t.task_id);
}

function listUpsert(prev, t) {
    if (prev && listIds.has(prev.task_id)) listRemove(prev);
    list.splice(indexFor(t), 0, t);
    listIds.add(t.task_id);
}

function matches(t) {
    if (filter.station && t.station_id !== filter.station) return false;
    if (filter.level && t.level !== filter.level) return false;
    switch (filter.state) {
        case 'open':
            return isOpen(t);
        case 'overdue':
            return isOpen(t) && !!t.overdue;
        case 'closed':
            return t.state === 'closed';
        default:
            return true;
    }
}

// The filters `open` and `overdue` are a part of the area's open tasks, which the page has;
// `closed` and `all` need the service.
async function applyFilter() {
    const gen = ++listGen;
    if (filter.state === 'open' || filter.state === 'overdue') {
        list = [...area.values()].filter(matches);
        sortList();
        listIds = new Set(list.map((t) => t.task_id));
        listEl.scrollTop = 0;
        scheduleRender();
        return;
    }
    const q = new URLSearchParams({ state: filter.state });
    if (filter.station) q.set('station', filter.station);
    if (filter.level) q.set('level', filter.level);
    $('task-count').textContent = '加载中 Loading…';
    let res;
    try {
        res = await api(`/api/tasks?${q}`);
    } catch (e) {
        if (gen === listGen) $('task-count').textContent = e.message;
        return;
    }
    if (gen !== listGen) return;
    setServerTime(res.as_of);
    list = res.tasks.filter(matches);
    sortList();
    listIds = new Set(list.map((t) => t.task_id));
    listEl.scrollTop = 0;
    scheduleRender();
}

const rowEls = new Map(); // task_id -> row element now in the DOM
let frame = 0;
let pendingSyncMs = null;

function scheduleRender() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
        frame = 0;
        const t0 = performance.now();
        render();
        if (pendingSyncMs !== null) {
            stats.lastUpdateMs = +(pendingSyncMs + performance.now() - t0).toFixed(3);
            pendingSyncMs = null;
        }
    });
}

function rowFor(t) {
    const d = deadlineText(t);
    let cls = `row lvl-row-${t.level}`;
    if (t.overdue || d.late) cls += ' is-overdue';
    if (t.escalated_tier > 0) cls += ' is-escalated';
    if (t.state === 'closed') cls += ' is-closed';
    const state = h('span', { class: 'c-state' }, STATE_LABEL[t.state] || t.state);
    if (t.state === 'closed' && t.outcome) state.textContent = OUTCOME_LABEL[t.outcome] || t.outcome;
    state.title = state.textContent;
    if (t.escalated_tier > 0) {
        const tier = t.escalated_tier >= 2 ? '升级中心 escalated to the centre' : '升级值班台 escalated to the desk';
        // First, so that a long state label cannot push it out of the column.
        state.prepend(h('span', { class: 'badge esc', title: tier }, `升级 T${t.escalated_tier}`));
    }
    const row = h('div', {
        class: cls, role: 'listitem', tabindex: '0',
        dataset: { taskId: t.task_id, state: t.state, stationId: t.station_id },
    },
    h('span', { class: `lvl lvl-${t.level}` }, LEVEL_LABEL[t.level] || t.level),
    h('span', { class: 'c-deadline' }, d.text),
    // A task whose person is in no cell has no grid (nor station): it is the centre's.
    h('span', { class: 'c-grid', title: t.grid_id ? `${t.grid_name} ${t.grid_id}` : NO_GRID }, t.grid_name || NO_GRID),
    h('span', { class: 'c-assignee mono', title: t.assignee_id }, t.assignee_id),
    h('span', { class: 'c-number mono' }, t.victim),
    state);
    row._task = t;
    return row;
}

function render() {
    stats.tasks = list.length;
    $('task-count').textContent = `${int(list.length)} 条 tasks`;
    rowsEl.style.height = `${list.length * ROW_H}px`;
    const top = listEl.scrollTop;
    const height = listEl.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(list.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const keep = new Set();
    for (let i = first; i < last; i++) {
        const t = list[i];
        keep.add(t.task_id);
        let row = rowEls.get(t.task_id);
        if (row && row._task !== t) {
            const fresh = rowFor(t);
            row.replaceWith(fresh);
            row = fresh;
            rowEls.set(t.task_id, row);
        } else if (!row) {
            row = rowFor(t);
            rowEls.set(t.task_id, row);
            rowsEl.append(row);
        }
        if (row._top !== i * ROW_H) {
            row._top = i * ROW_H;
            row.style.transform = `translateY(${row._top}px)`;
        }
    }
    for (const [id, row] of rowEls) {
        if (!keep.has(id)) {
            row.remove();
            rowEls.delete(id);
        }
    }
    if (!list.length && !rowsEl.querySelector('.empty')) {
        rowsEl.append(h('p', { class: 'empty muted' }, '没有任务 No tasks'));
    } else if (list.length) {
        const empty = rowsEl.querySelector('.empty');
        if (empty) empty.remove();
    }
}

// Countdowns tick in the rows on screen only.
function tick() {
    const at = now();
    for (const row of rowEls.values()) {
        const t = row._task;
        const d = deadlineText(t, at);
        const cell = row.children[1];
        if (cell.textContent !== d.text) cell.textContent = d.text;
        row.classList.toggle('is-overdue', !!t.overdue || d.late);
    }
}

function wireList() {
    listEl.addEventListener('scroll', scheduleRender, { passive: true });
    window.addEventListener('resize', scheduleRender);
    const pick = (ev) => {
        const row = ev.target.closest('.row');
        if (!row) return;
        for (const r of rowsEl.querySelectorAll('.row.is-picked')) r.classList.remove('is-picked');
        row.classList.add('is-picked');
        selectCell(row._task.grid_id);
    };
    rowsEl.addEventListener('click', pick);
    listEl.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' && ev.target.classList.contains('row')) pick(ev);
    });
    for (const [key, id] of [['station', 'filter-station'], ['level', 'filter-level'], ['state', 'filter-state']]) {
        $(id).addEventListener('change', (ev) => {
            filter = { ...filter, [key]: ev.target.value };
            applyFilter();
        });
    }
    $('filters').addEventListener('submit', (ev) => ev.preventDefault());
}

// --- live events -----------------------------------------------------------------------------

function onTask(t) {
    const t0 = performance.now();
    const prev = area.get(t.task_id);
    if (prev) count(prev, -1);
    if (isOpen(t)) {
        area.set(t.task_id, t);
        count(t, 1);
    } else {
        area.delete(t.task_id);
    }
    if (prev && prev.grid_id !== t.grid_id) paintCell(prev.grid_id);
    paintCell(t.grid_id);
    const listed = listIds.has(t.task_id);
    const old = listed ? findListed(t) : null;
    if (matches(t)) listUpsert(old, t);
    else if (listed) listRemove(old || prev || t);
    stats.updates += 1;
    pendingSyncMs = (pendingSyncMs || 0) + (performance.now() - t0);
    scheduleRender();
    refreshPanelSoon(t.grid_id);
}

// The listed version of a task (the list may hold an older copy than `area`, e.g. a closed one).
function findListed(t) {
    const row = rowEls.get(t.task_id);
    if (row) return row._task;
    const prev = area.get(t.task_id);
    if (prev) {
        const i = indexFor(prev);
        if (list[i] && list[i].task_id === t.task_id) return list[i];
    }
    return list.find((x) => x.task_id === t.task_id) || null;
}

const FIGURES = [
    ['tasks', '推送 Pushed', int],
    ['people', '人数 People', int],
    ['reached', '劝阻到位 Reached', int],
    ['reach_rate', '到位率 Reach rate', percent],
    ['overdue', '超时 Overdue', int],
    ['escalated', '升级 Escalated', int],
];

function renderFigures(f) {
    const box = $('figures');
    if (!box.firstChild) {
        const table = h('table', { class: 'fig-table' },
            h('thead', null, h('tr', null, h('th', { scope: 'col' }, ''), FIGURES.map(([, label]) => h('th', { scope: 'col' }, label)))),
            h('tbody', null, [['today', '今日 Today'], ['month', '本月 Month']].map(([span, label]) =>
                h('tr', { dataset: { span } }, h('th', { scope: 'row' }, label),
                    FIGURES.map(([key]) => h('td', { dataset: { figure: key } }, '—'))))));
        box.append(table);
    }
    for (const span of ['today', 'month']) {
        const row = box.querySelector(`tr[data-span="${span}"]`);
        const fig = f && f[span];
        for (const [key, , fmt] of FIGURES) {
            const td = row.querySelector(`td[data-figure="${key}"]`);
            const text = fig ? fmt(fig[key]) : '—';
            if (td.textContent !== text) td.textContent = text;
            if (key === 'overdue' || key === 'escalated') td.classList.toggle('warn', !!(fig && fig[key] > 0));
        }
    }
}

// After a reconnect the page may have missed events: fetch the area's open tasks again.
async function reloadTasks() {
    const res = await api('/api/tasks?state=open');
    setServerTime(res.as_of);
    area.clear();
    counts.clear();
    for (const t of res.tasks) {
        area.set(t.task_id, t);
        count(t, 1);
    }
    for (const id of cellEls.keys()) paintCell(id);
    await applyFilter();
}

// --- start ------------------------------------------------------------------------------------

async function start() {
    wireSignOut($('sign-out'));
    // All at once: a page without a session goes to sign-in on the first 401.
    const [meAnswer, grid, tasks, figures] = await Promise.all([
        loadMe(),
        api('/api/grid'),
        api('/api/tasks?state=open'),
        api('/api/figures').catch((e) => (e.status === 401 ? Promise.reject(e) : null)),
    ]);
    me = meAnswer;
    if (me.scope === 'officer') {
        location.replace('/officer');
        return;
    }
    $('area-name').textContent = me.name || me.id;
    document.title = `dissuade · 值班台 · ${me.name || me.id}`;
    performance.mark('dissuade:fetched');
    setServerTime(tasks.as_of);
    stationNames = new Map((grid.stations || []).map((s) => [s.station_id, s.name]));
    const stations = me.stations || [];
    if (stations.length > 1) {
        const sel = $('filter-station');
        for (const id of stations) sel.append(h('option', { value: id }, stationNames.get(id) || id));
        $('filter-station-label').hidden = false;
    }
    buildMap(grid);
    performance.mark('dissuade:map-built');
    for (const t of tasks.tasks) {
        if (!isOpen(t)) continue;
        area.set(t.task_id, t);
        count(t, 1);
    }
    for (const id of counts.keys()) paintCell(id);
    $('desk').hidden = false;
    list = tasks.tasks.filter(matches);
    sortList();
    listIds = new Set(list.map((t) => t.task_id));
    render();
    performance.mark('dissuade:list-built');
    renderFigures(figures);
    wireMap();
    wireList();
    // First render: from navigation start to the map and list drawn (the frame after they
    // were put in the DOM).
    requestAnimationFrame(() => setTimeout(() => {
        stats.firstRenderMs = +performance.now().toFixed(1);
    }, 0));
    setInterval(tick, 1000);
    const live = $('live');
    liveEvents(
        { task: onTask, figures: renderFigures },
        {
            onState: (up) => {
                live.textContent = up ? '实时 Live' : '重连中 Reconnecting…';
                live.classList.toggle('down', !up);
            },
            onReconnect: () => reloadTasks().catch(() => {}),
        }
    );
}

start().catch((e) => {
    if (e.status === 401) return; // on the way to sign-in
    const p = h('p', { class: 'error page-error', role: 'alert' }, `加载失败 Could not load: ${e.message}`);
    document.body.append(p);
});

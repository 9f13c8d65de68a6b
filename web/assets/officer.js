// The community officer's phone page: my open tasks by deadline, a task's detail with the
// number to call, the script and the outcome buttons (two taps: an outcome, then send).
import {
    api, loadMe, liveEvents, setServerTime, now, wireSignOut, isOpen, deadlineText, clock, h,
    LEVEL_LABEL, STATE_LABEL, OUTCOME_LABEL, REASON_LABEL,
} from './common.js';

const $ = (id) => document.getElementById(id);
const listEl = $('task-list');
const tasks = new Map(); // task_id -> Task, my open tasks
const reported = new Set(); // tasks I closed from this page: they stay off the list
let current = null; // the task whose detail is open
let detail = null; // its GET /api/tasks/{id} answer
let chosen = null; // the outcome picked, waiting for "send"
let sending = false;

// --- the list ---------------------------------------------------------------------------------

let frame = 0;
function scheduleList() {
    if (!frame) frame = requestAnimationFrame(() => {
        frame = 0;
        renderList();
    });
}

function card(t) {
    const d = deadlineText(t);
    let cls = `card lvl-row-${t.level}`;
    if (t.overdue || d.late) cls += ' is-overdue';
    if (t.escalated_tier > 0) cls += ' is-escalated';
    return h('li', { class: cls, dataset: { taskId: t.task_id, state: t.state } },
        h('button', { type: 'button', class: 'card-btn' },
            h('span', { class: 'card-top' },
                h('span', { class: `lvl lvl-${t.level}` }, LEVEL_LABEL[t.level] || t.level),
                h('span', { class: 'c-deadline' }, d.text)),
            h('span', { class: 'card-grid' }, t.grid_name),
            h('span', { class: 'card-bottom' },
                h('span', { class: 'mono' }, t.victim),
                h('span', { class: 'muted' }, STATE_LABEL[t.state] || t.state))));
}

function renderList() {
    const sorted = [...tasks.values()].sort((a, b) => a.deadline - b.deadline || (a.task_id < b.task_id ? -1 : 1));
    const old = new Map([...listEl.children].map((li) => [li.dataset.taskId, li]));
    const items = sorted.map((t) => {
        const li = old.get(t.task_id);
        if (li && li._task === t) return li;
        const fresh = card(t);
        fresh._task = t;
        return fresh;
    });
    listEl.replaceChildren(...items);
    $('list-empty').hidden = sorted.length > 0;
}

function tick() {
    const at = now();
    for (const li of listEl.children) {
        const t = li._task;
        if (!t) continue;
        const d = deadlineText(t, at);
        const el = li.querySelector('.c-deadline');
        if (el.textContent !== d.text) el.textContent = d.text;
        li.classList.toggle('is-overdue', !!t.overdue || d.late);
    }
    if (current && detail) {
        const el = $('detail-head').querySelector('.c-deadline');
        const d = deadlineText(current, at);
        if (el && el.textContent !== d.text) el.textContent = d.text;
    }
}

async function loadTasks() {
    const res = await api('/api/tasks?state=open');
    setServerTime(res.as_of);
    tasks.clear();
    for (const t of res.tasks) if (isOpen(t) && !reported.has(t.task_id)) tasks.set(t.task_id, t);
    renderList();
}

// --- the detail -------------------------------------------------------------------------------

function showList() {
    current = null;
    detail = null;
    $('task-detail').hidden = true;
    $('list-view').hidden = false;
    scheduleList();
}

function telHref(number) {
    return `tel:${String(number).replace(/[^0-9+]/g, '')}`;
}

function pretty(number) {
    const n = String(number);
    return /^1\d{10}$/.test(n) ? `${n.slice(0, 3)} ${n.slice(3, 7)} ${n.slice(7)}` : n;
}

function renderHead(t) {
    const d = deadlineText(t);
    $('detail-head').replaceChildren(
        h('div', { class: 'card-top' },
            h('span', { class: `lvl lvl-${t.level}` }, LEVEL_LABEL[t.level] || t.level),
            h('span', { class: `c-deadline${d.late ? ' late' : ''}` }, d.text)),
        h('p', { class: 'detail-grid' }, t.grid_name),
        h('p', { class: 'muted' },
            `${STATE_LABEL[t.state] || t.state}`,
            t.escalated_tier > 0 ? h('span', { class: 'badge esc' }, t.escalated_tier >= 2 ? '已升级中心 T2' : '已升级值班台 T1') : null,
            ` · 下发 ${clock(t.created_at)} · 时限 ${clock(t.deadline)}`));
}

function renderDetail() {
    const t = detail;
    renderHead(t);
    const call = $('detail-call');
    if (t.victim_number) {
        call.replaceChildren(h('a', { id: 'task-tel', class: 'call', href: telHref(t.victim_number) },
            '拨打 Call ', h('span', { class: 'mono' }, pretty(t.victim_number))));
    } else {
        call.replaceChildren(h('p', { class: 'muted' }, `${t.victim} · 号码不向本账号显示 Number not shown to this account`));
    }
    $('detail-script').textContent = t.script || '—';
    $('detail-reasons').replaceChildren(...(t.reasons || []).map((r) => h('li', null, r)));
    $('detail-feedback').replaceChildren(...(t.feedback || []).map((f) =>
        h('li', null, h('span', { class: 'muted' }, clock(f.at)), ' ', OUTCOME_LABEL[f.outcome] || f.outcome,
            f.reason ? ` · ${REASON_LABEL[f.reason] || f.reason}` : '', f.note ? ` · ${f.note}` : '')));
    if (!t.feedback || !t.feedback.length) $('detail-feedback').append(h('li', { class: 'muted' }, '暂无 None yet'));
    const closed = !isOpen(t) || reported.has(t.task_id);
    $('outcomes').hidden = closed;
    if (closed) $('confirm').hidden = true;
}

async function openTask(id, push = true) {
    const t = tasks.get(id);
    current = t || { task_id: id };
    detail = null;
    chosen = null;
    $('list-view').hidden = true;
    $('task-detail').hidden = false;
    $('confirm').hidden = true;
    $('outcomes').hidden = true;
    setStatus('', '');
    $('detail-head').replaceChildren(h('p', { class: 'muted' }, '加载中 Loading…'));
    $('detail-call').replaceChildren();
    $('detail-script').textContent = '';
    $('detail-reasons').replaceChildren();
    $('detail-feedback').replaceChildren();
    if (push) history.pushState({ task: id }, '');
    window.scrollTo(0, 0);
    try {
        const d = await api(`/api/tasks/${encodeURIComponent(id)}`);
        if (!current || current.task_id !== id) return;
        detail = d;
        current = d;
        renderDetail();
    } catch (e) {
        if (!current || current.task_id !== id) return;
        $('detail-head').replaceChildren(h('p', { class: 'error' }, e.status === 404 ? '任务不存在 No such task' : e.message));
    }
}

function setStatus(kind, text) {
    const el = $('feedback-status');
    el.textContent = text;
    el.dataset.status = kind;
    el.className = `feedback-status ${kind}`;
}

function choose(outcome) {
    if (!detail) return;
    if (outcome === 'acknowledged') {
        // "On my way" is not a closing outcome: one tap sends it.
        send('acknowledged');
        return;
    }
    chosen = outcome;
    for (const b of $('outcomes').querySelectorAll('button')) b.classList.toggle('is-chosen', b.dataset.outcome === outcome);
    $('confirm-what').textContent = `上报 Report: ${OUTCOME_LABEL[outcome]}`;
    $('reason-box').hidden = outcome !== 'not_reached';
    $('loss-box').hidden = outcome !== 'already_defrauded';
    $('confirm').hidden = false;
    setStatus('', '');
    $('send-feedback').focus({ preventScroll: true });
    $('confirm').scrollIntoView({ block: 'nearest' });
}

async function send(outcome) {
    if (!detail || sending) return;
    const body = { task_id: detail.task_id, outcome };
    if (outcome === 'not_reached') {
        const r = document.querySelector('input[name="reason"]:checked');
        body.reason = r ? r.value : 'other';
    }
    if (outcome === 'already_defrauded') {
        const raw = $('loss').value.trim();
        if (raw) {
            const loss = Number(raw);
            if (!Number.isFinite(loss) || loss < 0) {
                setStatus('error', '金额无效 Loss must be a number ≥ 0');
                return;
            }
            body.loss_cny = loss;
        }
    }
    const note = $('note').value.trim();
    if (note && outcome !== 'acknowledged') body.note = note.slice(0, 500);
    sending = true;
    $('send-feedback').disabled = true;
    setStatus('sending', '发送中 Sending…');
    try {
        await api('/api/feedback', { method: 'POST', body });
        const closing = outcome !== 'acknowledged' && outcome !== 'not_reached';
        setStatus('sent', `已发送 Sent: ${OUTCOME_LABEL[outcome]}`);
        $('confirm').hidden = true;
        $('note').value = '';
        $('loss').value = '';
        chosen = null;
        for (const b of $('outcomes').querySelectorAll('button')) b.classList.remove('is-chosen');
        const at = now();
        detail.feedback = [...(detail.feedback || []), { at, actor_id: '', outcome, reason: body.reason || null, note: body.note || null }];
        if (closing) {
            reported.add(detail.task_id);
            tasks.delete(detail.task_id);
        } else {
            const t = tasks.get(detail.task_id);
            const state = outcome === 'acknowledged' ? 'acknowledged' : 'not_reached';
            if (t) tasks.set(t.task_id, { ...t, state });
            detail = { ...detail, state };
            current = detail;
        }
        renderDetail();
        scheduleList();
    } catch (e) {
        if (e.status === 401) return;
        setStatus('error', `发送失败 Not sent: ${e.message}`);
    } finally {
        sending = false;
        $('send-feedback').disabled = false;
    }
}

function onTask(t) {
    if (isOpen(t) && !reported.has(t.task_id)) tasks.set(t.task_id, t);
    else tasks.delete(t.task_id);
    scheduleList();
    if (detail && detail.task_id === t.task_id) {
        detail = { ...detail, ...t };
        current = detail;
        renderDetail();
        if (!isOpen(t) && !reported.has(t.task_id)) setStatus('', '任务已办结 This task is closed');
    }
}

// --- start ------------------------------------------------------------------------------------

async function start() {
    wireSignOut($('sign-out'));
    const me = await loadMe();
    if (me.scope !== 'officer') {
        location.replace('/desk');
        return;
    }
    $('who').textContent = `${me.name || ''} · ${me.id}`;
    listEl.addEventListener('click', (ev) => {
        const li = ev.target.closest('li[data-task-id]');
        if (li) openTask(li.dataset.taskId);
    });
    $('outcomes').addEventListener('click', (ev) => {
        const b = ev.target.closest('button[data-outcome]');
        if (b) choose(b.dataset.outcome);
    });
    $('confirm').addEventListener('submit', (ev) => {
        ev.preventDefault();
        if (chosen) send(chosen);
    });
    $('cancel-feedback').addEventListener('click', () => {
        chosen = null;
        $('confirm').hidden = true;
        for (const b of $('outcomes').querySelectorAll('button')) b.classList.remove('is-chosen');
    });
    $('back').addEventListener('click', () => {
        if (history.state && history.state.task) history.back();
        else showList();
    });
    window.addEventListener('popstate', (ev) => {
        if (ev.state && ev.state.task) openTask(ev.state.task, false);
        else showList();
    });
    await loadTasks();
    setInterval(tick, 1000);
    const live = $('live');
    liveEvents(
        { task: onTask },
        {
            onState: (up) => {
                live.textContent = up ? '实时 Live' : '重连中 Reconnecting…';
                live.classList.toggle('down', !up);
            },
            onReconnect: () => loadTasks().catch(() => {}),
        }
    );
}

start().catch((e) => {
    if (e.status === 401) return;
    document.querySelector('main').prepend(h('p', { class: 'error', role: 'alert' }, `加载失败 Could not load: ${e.message}`));
});

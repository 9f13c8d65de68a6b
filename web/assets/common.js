// Shared by the sign-in, desk and officer pages: the API client, labels and formatting.
// No framework, no third-party code; see docs/web.md for the API.

let csrf = null;
// Server clock minus ours, from the `as_of` of /api/tasks, so countdowns use the service's time.
let clockSkew = 0;

export function now() {
    return Date.now() + clockSkew;
}

export function setServerTime(asOf) {
    if (typeof asOf === 'number') clockSkew = asOf - Date.now();
}

export class ApiError extends Error {
    constructor(status, message) {
        super(message);
        this.status = status;
    }
}

// Where a page goes when the session is missing or has ended.
export function toSignIn() {
    if (location.pathname !== '/') location.replace('/');
}

// fetch() for the JSON API. GETs and state-changing calls alike; the latter carry the CSRF
// header. A 401 anywhere sends the browser back to sign-in (unless `allow401`).
export async function api(path, { method = 'GET', body, allow401 = false } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
    let res;
    try {
        res = await fetch(path, {
            method,
            headers,
            body: body === undefined ? undefined : JSON.stringify(body),
            credentials: 'same-origin',
            cache: 'no-store',
        });
    } catch (e) {
        throw new ApiError(0, '网络错误 / network error');
    }
    if (res.status === 401 && !allow401) {
        toSignIn();
        throw new ApiError(401, 'not signed in');
    }
    let data = null;
    const text = await res.text();
    if (text) {
        try {
            data = JSON.parse(text);
        } catch {
            data = null;
        }
    }
    if (!res.ok) {
        const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status}`;
        throw new ApiError(res.status, msg);
    }
    return data;
}

// GET /api/me, remembering the CSRF token for later state-changing calls.
export async function loadMe() {
    const me = await api('/api/me');
    csrf = me.csrf;
    return me;
}

export async function signOut() {
    try {
        await api('/api/session', { method: 'DELETE' });
    } catch {
        // Signed out or not, the page goes back to sign-in.
    }
    location.replace('/');
}

// Server-sent events with reconnection. `handlers` maps event names to functions of the parsed
// data; `onState(live: boolean)` tells the page whether it is live; `onReconnect()` runs after
// a connection came back, so the page can fetch what it may have missed.
export function liveEvents(handlers, { onState = () => {}, onReconnect = () => {} } = {}) {
    let es = null;
    let wasDown = false;
    let retry = 1000;
    const open = () => {
        es = new EventSource('/api/events');
        es.addEventListener('open', () => {
            retry = 1000;
            onState(true);
            if (wasDown) {
                wasDown = false;
                onReconnect();
            }
        });
        for (const [name, fn] of Object.entries(handlers)) {
            es.addEventListener(name, (ev) => {
                let data;
                try {
                    data = JSON.parse(ev.data);
                } catch {
                    return;
                }
                fn(data);
            });
        }
        es.addEventListener('error', async () => {
            onState(false);
            wasDown = true;
            if (es.readyState !== EventSource.CLOSED) return; // the browser retries by itself
            // Closed for good (a non-200 answer, e.g. 401): find out whether we are still
            // signed in (api() goes to sign-in if not), then open a new one.
            es = null;
            try {
                await api('/api/me');
            } catch (e) {
                if (e.status === 401) return;
            }
            setTimeout(open, retry);
            retry = Math.min(retry * 2, 30000);
        });
    };
    open();
    return { close: () => es && es.close() };
}

// --- labels -------------------------------------------------------------------------------

export const LEVELS = ['critical', 'high', 'medium', 'low'];
export const LEVEL_LABEL = {
    critical: '紧急 Critical',
    high: '高 High',
    medium: '中 Medium',
    low: '低 Low',
};
export const STATE_LABEL = {
    open: '待处理 Open',
    acknowledged: '已响应 On the way',
    not_reached: '未联系上 Not reached',
    upgraded: '已升级 Upgraded',
    closed: '已办结 Closed',
};
export const OUTCOME_LABEL = {
    acknowledged: '在路上 On my way',
    reached_in_person: '当面劝阻 Reached in person',
    reached_by_phone: '电话劝阻 Reached by phone',
    not_reached: '未联系上 Not reached',
    false_alarm: '误报 False alarm',
    already_defrauded: '已被骗 Already defrauded',
};
export const REASON_LABEL = {
    no_answer: '无人接听 No answer',
    wrong_address: '地址有误 Wrong address',
    refused: '拒绝 Refused',
    moved: '已搬走 Moved',
    other: '其他 Other',
};
export const ROLE_LABEL = {
    community_officer: '社区民警 Officer',
    auxiliary_officer: '辅警 Auxiliary',
    grid_worker: '网格员 Grid worker',
};

// A task still needs work unless it is closed (the API's default `state=open`).
export function isOpen(t) {
    return t.state !== 'closed';
}

// --- formatting ---------------------------------------------------------------------------

function span(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (h >= 24) return `${Math.floor(h / 24)}d ${h % 24}h`;
    if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
    return `${m}:${String(sec).padStart(2, '0')}`;
}

// "剩 12:04 left" or "超时 3:10 late" (overdue since 3 min 10 s); `late` tells the caller which.
export function deadlineText(t, at = now()) {
    const left = t.deadline - at;
    if (t.state === 'closed') return { text: '—', late: false };
    if (left >= 0 && !t.overdue) return { text: `剩 ${span(left)} left`, late: false };
    return { text: `超时 ${span(-left)} late`, late: true };
}

const timeFmt = new Intl.DateTimeFormat('zh-CN', {
    timeZone: 'Asia/Shanghai',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    hour12: false,
});
export function clock(ms) {
    return timeFmt.format(new Date(ms));
}

export function percent(x) {
    return typeof x === 'number' && isFinite(x) ? `${(x * 100).toFixed(1)}%` : '—';
}

export function int(x) {
    return typeof x === 'number' && isFinite(x) ? x.toLocaleString('en-US') : '—';
}

// h('li', {class: 'x', dataset: {taskId: 1}}, 'text', child, ...): a small element builder.
// Text is always set as text, never parsed as HTML.
export function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
        for (const [k, v] of Object.entries(attrs)) {
            if (v === undefined || v === null || v === false) continue;
            if (k === 'class') el.className = v;
            else if (k === 'dataset') Object.assign(el.dataset, v);
            else if (k === 'text') el.textContent = v;
            else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
            else el.setAttribute(k, v === true ? '' : String(v));
        }
    }
    for (const c of children.flat()) {
        if (c === undefined || c === null || c === false) continue;
        el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
}

// Fills the sign-out button of a page's header.
export function wireSignOut(button) {
    button.addEventListener('click', () => signOut());
}

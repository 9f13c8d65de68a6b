// Sign-in: POST /api/session with the token in a JSON body (never in a URL), then go to the
// page for the session's scope.
import { api } from './common.js';

const form = document.getElementById('signin-form');
const input = document.getElementById('signin-token');
const submit = document.getElementById('signin-submit');
const error = document.getElementById('signin-error');

function pageFor(me) {
    return me.scope === 'officer' ? '/officer' : '/desk';
}

function showError(msg) {
    error.textContent = msg;
    error.hidden = false;
}

// Already signed in? Then straight on.
api('/api/me', { allow401: true })
    .then((me) => location.replace(pageFor(me)))
    .catch(() => {
        input.focus();
    });

form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) {
        showError('请输入令牌 Enter your token');
        return;
    }
    error.hidden = true;
    submit.disabled = true;
    try {
        await api('/api/session', { method: 'POST', body: { token }, allow401: true });
        input.value = '';
        const me = await api('/api/me', { allow401: true });
        location.replace(pageFor(me));
    } catch (e) {
        input.value = '';
        input.focus();
        showError(
            e.status === 401
                ? '登录失败：令牌无效 Sign-in failed: token not accepted'
                : `登录失败 Sign-in failed: ${e.message}`
        );
    } finally {
        submit.disabled = false;
    }
});

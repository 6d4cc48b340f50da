// Moat web app: session bootstrap, hash router and page controllers.
//
//   #/        conversations list
//   #/c/<id>  one conversation: its runs, rebuilt from the event stream
//
// Each page is entered with enter…() and returns a controller whose
// dispose() is called when the page is left; async work checks `disposed`
// so a late answer never touches another page.

import * as api from './api.js';
import { ConversationStream } from './stream.js';
import { $, RunView, conversationItem, errorText, insertRun, setConnection, setMessage, showPage, showScreen } from './view.js';

let page = null; // the current page's controller
let firstRoute = true;

// ---- session ----

async function boot() {
  wireStaticHandlers();
  api.onSessionEnd(() => showSignedOut(true));
  try {
    await api.refreshSession();
  } catch {
    showSignedOut(false);
    return;
  }
  await enterApp();
}

/** Shows the login screen; `notice`: the session ended because refresh failed. */
function showSignedOut(notice) {
  leavePage();
  setConnection('offline');
  $('whoami').textContent = '';
  $('password').value = '';
  setMessage($('login-error'), '');
  $('signed-out').hidden = !notice;
  document.title = 'Sign in — Moat';
  showScreen('login');
  firstRoute = true;
}

async function enterApp() {
  $('signed-out').hidden = true;
  showScreen('app');
  setConnection('offline');
  route();
  try {
    const me = await api.me();
    if (api.isSignedIn()) $('whoami').textContent = (me && (me.email || me.id)) || '';
  } catch {
    // Not fatal: the header just stays without the email.
  }
}

async function onLogin(event) {
  event.preventDefault();
  const email = $('email').value.trim();
  const password = $('password').value;
  const error = $('login-error');
  if (!email || !password) {
    setMessage(error, 'Enter your email and password.');
    return;
  }
  const submit = $('login-submit');
  submit.disabled = true;
  setMessage(error, '');
  try {
    await api.login(email, password);
  } catch (e) {
    setMessage(error, errorText(e));
    $('password').focus();
    return;
  } finally {
    submit.disabled = false;
  }
  $('password').value = '';
  await enterApp();
}

async function onLogout() {
  leavePage();
  let failure = null;
  try {
    await api.logout();
  } catch (e) {
    failure = e;
  }
  showSignedOut(false);
  if (failure) {
    // The page forgot the session; the server may not have (the cookie could still restore it).
    setMessage($('login-error'), `Signed out here, but the server could not end the session: ${errorText(failure)}`);
  }
  $('email').focus();
}

// ---- routing ----

function parseRoute(hash) {
  const match = /^#\/c\/([^/?#]+)$/.exec(hash);
  if (match) {
    try {
      return { name: 'conversation', id: decodeURIComponent(match[1]) };
    } catch {
      // malformed escape: fall through to the list
    }
  }
  return { name: 'list' };
}

function leavePage() {
  if (page) {
    page.dispose();
    page = null;
  }
}

function route() {
  if (!api.isSignedIn()) return; // the login screen stays until sign-in
  leavePage();
  const target = parseRoute(location.hash);
  page = target.name === 'conversation' ? enterConversation(target.id) : enterList();
  // Move focus to the new page's heading, except on first render.
  if (!firstRoute) page.heading.focus({ preventScroll: false });
  firstRoute = false;
}

// ---- conversations list ----

function enterList() {
  const list = $('conversations');
  const loadMore = $('load-more');
  const form = $('new-conversation-form');
  const error = $('list-error');
  const ctx = { disposed: false, cursor: null, loading: false };

  showPage('list');
  document.title = 'Conversations — Moat';
  list.replaceChildren();
  loadMore.hidden = true;
  $('conversations-empty').hidden = true;
  setMessage(error, '');

  const updateEmpty = () => {
    $('conversations-empty').hidden = list.children.length > 0 || !!ctx.cursor;
  };

  // Conversations created here are appended at once (the list is oldest
  // first); when later pages bring them again they take their place there.
  const addItems = (items) => {
    for (const item of items) {
      const id = String(item.id);
      const existing = [...list.children].find((li) => li.dataset.id === id);
      const firstLocal = list.querySelector('li.local');
      if (existing) {
        existing.classList.remove('local');
        if (firstLocal && firstLocal !== existing) list.insertBefore(existing, firstLocal);
      } else {
        list.insertBefore(conversationItem(item), firstLocal);
      }
    }
  };

  const load = async () => {
    if (ctx.loading) return;
    ctx.loading = true;
    loadMore.disabled = true;
    try {
      const result = await api.listConversations(ctx.cursor);
      if (ctx.disposed) return;
      addItems(Array.isArray(result?.items) ? result.items : []);
      ctx.cursor = result?.next_cursor || null;
      loadMore.hidden = !ctx.cursor;
      setMessage(error, '');
    } catch (e) {
      if (!ctx.disposed && !api.isSessionEnded(e)) setMessage(error, errorText(e));
    } finally {
      ctx.loading = false;
      loadMore.disabled = false;
      if (!ctx.disposed) updateEmpty();
    }
  };

  const onCreate = async (event) => {
    event.preventDefault();
    const input = $('new-conversation-title');
    const button = $('create-conversation');
    const title = input.value.trim();
    if (!title) {
      setMessage(error, 'Enter a title for the new conversation.');
      input.focus();
      return;
    }
    button.disabled = true;
    setMessage(error, '');
    try {
      const created = await api.createConversation(title);
      if (ctx.disposed) return;
      input.value = '';
      const id = String(created.id);
      if (![...list.children].some((li) => li.dataset.id === id)) {
        const li = conversationItem(created);
        li.classList.add('local');
        list.append(li);
      }
      updateEmpty();
    } catch (e) {
      if (!ctx.disposed && !api.isSessionEnded(e)) setMessage(error, errorText(e));
    } finally {
      button.disabled = false;
    }
  };

  form.addEventListener('submit', onCreate);
  loadMore.addEventListener('click', load);
  load();

  return {
    heading: $('list-heading'),
    dispose() {
      ctx.disposed = true;
      form.removeEventListener('submit', onCreate);
      loadMore.removeEventListener('click', load);
    },
  };
}

// ---- one conversation ----

/** Reads the run form into the demo agent's input (only keys it knows). */
function readRunForm() {
  const whole = (id, label, max) => {
    const raw = $(id).value.trim();
    const n = Number(raw);
    if (raw === '' || !Number.isInteger(n) || n < 0 || n > max) {
      throw new Error(`${label} must be a whole number from 0 to ${max}.`);
    }
    return n;
  };
  const input = {
    steps: whole('run-steps', 'Steps', 100000),
    delay_ms: whole('run-delay', 'Delay', 3600000),
    fail: $('run-fail').checked,
  };
  const text = $('run-text').value;
  if (text !== '') input.text = text;
  const ask = $('run-ask').value.trim();
  if (ask) input.ask = ask;
  const tool = $('run-tool').value.trim();
  if (tool) input.tool = tool;
  return input;
}

function describe(value) {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function enterConversation(id) {
  const runsBox = $('runs');
  const title = $('conversation-title');
  const form = $('run-form');
  const runError = $('run-error');
  const ctx = { disposed: false, runs: new Map() };

  showPage('conversation');
  title.textContent = 'Loading…';
  document.title = 'Conversation — Moat';
  runsBox.replaceChildren();
  $('runs-empty').hidden = false;
  setMessage(runError, '');
  $('start-run').disabled = false;

  // Commands go over the WebSocket; if it is down, the HTTP API does the same.
  const cancel = async (runId) => {
    if (stream.isLive()) await stream.cancel(runId);
    else await api.cancelRun(runId);
  };
  const answer = async (inputId, value) => {
    if (stream.isLive()) await stream.answer(inputId, value);
    else await api.answerInput(inputId, value);
  };

  /** The run's view, created on first sight; `order` positions it (seq of its first event). */
  const runFor = (runId, order) => {
    let run = ctx.runs.get(runId);
    if (!run) {
      const view = new RunView(runId, {
        onCancel: () => cancel(runId),
        onAnswer: (inputId, value) => answer(inputId, value),
      });
      run = { view, order };
      ctx.runs.set(runId, run);
      insertRun(runsBox, view.root, order);
      $('runs-empty').hidden = true;
    } else if (order < run.order) {
      // A run created from the POST answer gets its place once its first event arrives.
      run.order = order;
      run.view.root.remove();
      insertRun(runsBox, run.view.root, order);
    }
    return run;
  };

  /** Applies one stream event (seq order, no duplicates: the stream guarantees it). */
  const apply = (event) => {
    if (ctx.disposed || !event.run_id) return;
    const data = event.data && typeof event.data === 'object' ? event.data : {};
    const { view } = runFor(String(event.run_id), event.seq);
    switch (event.kind) {
      case 'run.queued':
        view.setStatus('queued');
        view.log(data.reason ? `queued again (${data.reason})` : 'queued');
        break;
      case 'run.started':
        view.setStatus('running');
        view.log('started');
        break;
      case 'message.delta':
        if (typeof data.text === 'string') view.appendText(data.text);
        break;
      case 'tool.started':
        view.log(`tool ${describe(data.tool)} started`);
        break;
      case 'tool.completed':
        view.log(
          data.result === undefined
            ? `tool ${describe(data.tool)} completed`
            : `tool ${describe(data.tool)} completed: ${describe(data.result)}`,
        );
        break;
      case 'input.requested':
        view.setStatus('waiting_input');
        view.log(`asked: ${describe(data.question ?? '')}`);
        if (data.input_id) view.showQuestion(String(data.input_id), describe(data.question ?? ''));
        break;
      case 'input.answered':
        view.clearQuestion(data.input_id ? String(data.input_id) : undefined);
        view.showError('');
        if (view.status === 'waiting_input') view.setStatus('running');
        view.log(`answered: ${describe(data.value)}`);
        break;
      case 'run.succeeded':
        view.setStatus('succeeded');
        view.clearQuestion();
        view.log('succeeded');
        break;
      case 'run.failed':
        view.setStatus('failed');
        view.clearQuestion();
        view.log(data.error ? `failed: ${describe(data.error)}` : 'failed');
        break;
      case 'run.cancelled':
        view.setStatus('cancelled');
        view.clearQuestion();
        view.log('cancelled');
        break;
      default:
        view.log(String(event.kind));
    }
  };

  const stream = new ConversationStream(id, {
    onEvent: apply,
    onState: (state) => {
      if (!ctx.disposed) setConnection(state);
    },
    onFatal: (message) => {
      if (!ctx.disposed) setMessage(runError, message);
    },
  });

  const onSubmit = async (event) => {
    event.preventDefault();
    let input;
    try {
      input = readRunForm();
    } catch (e) {
      setMessage(runError, e.message);
      return;
    }
    const button = $('start-run');
    button.disabled = true;
    setMessage(runError, '');
    try {
      const run = await api.startRun(id, input);
      if (ctx.disposed || !run || !run.id) return;
      const runId = String(run.id);
      // Show it right away; the stream's events then take over.
      if (!ctx.runs.has(runId)) runFor(runId, Infinity).view.setStatus(run.status || 'queued');
    } catch (e) {
      if (!ctx.disposed && !api.isSessionEnded(e)) setMessage(runError, errorText(e));
    } finally {
      button.disabled = false;
    }
  };
  form.addEventListener('submit', onSubmit);

  api
    .getConversation(id)
    .then((conversation) => {
      if (ctx.disposed) return;
      title.textContent = conversation?.title || '(untitled)';
      document.title = `${title.textContent} — Moat`;
    })
    .catch((e) => {
      if (ctx.disposed || api.isSessionEnded(e)) return;
      if (e.status === 404) {
        title.textContent = 'Conversation not found';
        $('start-run').disabled = true;
      }
      setMessage(runError, errorText(e));
    });

  // after=0: the whole history replays, then live events follow.
  stream.start();

  return {
    heading: title,
    dispose() {
      ctx.disposed = true;
      form.removeEventListener('submit', onSubmit);
      stream.close();
      setConnection('offline');
    },
  };
}

// ---- wiring ----

function wireStaticHandlers() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  window.addEventListener('hashchange', route);
  // Leaving the page closes the socket; coming back from the back/forward cache reopens it.
  window.addEventListener('pagehide', leavePage);
  window.addEventListener('pageshow', (event) => {
    if (event.persisted && api.isSignedIn()) route();
  });
}

boot();

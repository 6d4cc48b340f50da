// DOM-building helpers. Everything here builds nodes with createElement and
// sets text with textContent / Text nodes: agent output and every other
// value from the server is untrusted and must never be parsed as HTML.

export const $ = (id) => document.getElementById(id);

/**
 * Creates an element. `attrs`: `class`, `text` (textContent), `hidden`
 * (boolean), `dataset` (object), anything else via setAttribute.
 * Children: nodes or strings (as Text nodes); null/false are skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'hidden') node.hidden = !!value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Sets a message element's text and shows it, or hides it when `text` is empty. */
export function setMessage(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

// ---- screens ----

/** `loading` | `login` | `app`: the header is shown only in the app. */
export function showScreen(name) {
  $('loading').hidden = name !== 'loading';
  $('login-view').hidden = name !== 'login';
  $('app-header').hidden = name !== 'app';
  $('app-main').hidden = name !== 'app';
}

/** `list` | `conversation` */
export function showPage(name) {
  $('list-view').hidden = name !== 'list';
  $('conversation-view').hidden = name !== 'conversation';
}

const CONNECTION_TEXT = {
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

/** The connection indicator: `live` | `reconnecting` | `offline`. */
export function setConnection(state) {
  const node = $('connection');
  if (node.dataset.state === state) return;
  node.dataset.state = state;
  node.textContent = CONNECTION_TEXT[state] || state;
}

// ---- conversations list ----

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleString();
}

/** `li > a[href="#/c/<id>"]` for one conversation. */
export function conversationItem(conversation) {
  const id = String(conversation.id);
  const link = el('a', { href: `#/c/${encodeURIComponent(id)}`, text: conversation.title || '(untitled)' });
  const time = conversation.created_at
    ? el('time', { class: 'muted', datetime: conversation.created_at, text: formatTime(conversation.created_at) })
    : null;
  return el('li', { dataset: { id } }, link, time ? ' ' : null, time);
}

// ---- runs ----

export const ACTIVE_STATUSES = new Set(['queued', 'running', 'waiting_input']);

let uniqueCounter = 0;
const uniqueId = (prefix) => `${prefix}-${++uniqueCounter}`;

/** Describes an error caught from a command or an API call. */
export function errorText(error) {
  return (error && error.message) || 'Something went wrong.';
}

/**
 * One run's section: `section.run[data-run-id]` with `.run-status`,
 * `.run-text`, `.run-log`, `button.cancel-run` and, while a question is
 * pending, `.question`.
 *
 * `onCancel()` and `onAnswer(inputId, value)` return promises; a rejection's
 * message is shown in the run's error line.
 */
export class RunView {
  constructor(runId, { onCancel, onAnswer }) {
    this.runId = runId;
    this.onAnswer = onAnswer;
    this.status = null;
    this.inputId = null;

    const titleId = uniqueId('run-title');
    this.statusNode = el('span', { class: 'run-status', role: 'status' });
    this.cancelButton = el('button', { type: 'button', class: 'cancel-run', hidden: true, 'aria-describedby': titleId }, 'Cancel');
    this.textNode = document.createTextNode('');
    this.textBox = el('div', { class: 'run-text', 'aria-live': 'polite', 'aria-label': 'Agent output' }, this.textNode);
    this.logList = el('ol', { class: 'run-log', 'aria-label': 'Run log' });
    this.errorNode = el('p', { class: 'run-error error', role: 'alert', hidden: true });
    this.questionSlot = el('div', { class: 'question-slot' });

    this.root = el(
      'section',
      { class: 'run', dataset: { runId }, 'aria-labelledby': titleId },
      el(
        'div',
        { class: 'run-head' },
        el('h2', { class: 'run-title', id: titleId }, 'Run ', el('code', { text: runId.slice(0, 8), title: runId })),
        this.statusNode,
        this.cancelButton,
      ),
      this.textBox,
      this.questionSlot,
      this.logList,
      this.errorNode,
    );

    this.cancelButton.addEventListener('click', async () => {
      this.cancelButton.disabled = true;
      this.showError('');
      try {
        await onCancel();
      } catch (error) {
        this.showError(errorText(error));
      } finally {
        this.cancelButton.disabled = false;
      }
    });
  }

  /** Sets the status word; the Cancel button shows only while the run is active. */
  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.statusNode.textContent = status;
    this.statusNode.dataset.status = status;
    this.root.dataset.status = status;
    this.cancelButton.hidden = !ACTIVE_STATUSES.has(status);
  }

  /** Appends agent output verbatim (as text, never markup). */
  appendText(text) {
    this.textNode.appendData(text);
  }

  /** Adds a compact line to the run log. */
  log(line) {
    this.logList.append(el('li', { text: line }));
  }

  showError(message) {
    setMessage(this.errorNode, message);
  }

  /** Shows a pending question with Approve / Reject / Send. */
  showQuestion(inputId, question) {
    if (this.inputId === inputId) return;
    this.clearQuestion();
    this.inputId = inputId;

    const textId = uniqueId('question');
    const answerId = uniqueId('answer');
    const answerInput = el('input', { id: answerId, class: 'answer-text', type: 'text', autocomplete: 'off' });
    const approve = el('button', { type: 'button', class: 'approve' }, 'Approve');
    const reject = el('button', { type: 'button', class: 'reject' }, 'Reject');
    const send = el('button', { type: 'submit', class: 'send-answer' }, 'Send');
    const form = el(
      'form',
      { class: 'question', 'aria-labelledby': textId, novalidate: true },
      el('p', { class: 'question-text', id: textId, text: question ?? '' }),
      el('label', { for: answerId, text: 'Your answer' }),
      el('div', { class: 'answer-row' }, answerInput, el('div', { class: 'question-actions' }, approve, reject, send)),
    );
    const buttons = [approve, reject, send];

    const submit = async (value) => {
      buttons.forEach((b) => (b.disabled = true));
      this.showError('');
      try {
        await this.onAnswer(inputId, value);
      } catch (error) {
        this.showError(errorText(error));
      } finally {
        buttons.forEach((b) => (b.disabled = false));
      }
      // On success the question disappears when `input.answered` arrives.
    };
    approve.addEventListener('click', () => submit('approve'));
    reject.addEventListener('click', () => submit('reject'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = answerInput.value;
      if (!value.trim()) {
        this.showError('Type an answer before sending it.');
        answerInput.focus();
        return;
      }
      submit(value);
    });

    this.questionSlot.replaceChildren(form);
  }

  /** Removes the pending question (all of them when `inputId` is omitted). */
  clearQuestion(inputId) {
    if (inputId !== undefined && inputId !== this.inputId) return;
    this.inputId = null;
    this.questionSlot.replaceChildren();
  }
}

/** Inserts a run section so that runs stay in order of their first event (newest last). */
export function insertRun(container, section, order) {
  section.dataset.order = String(order);
  for (const other of container.children) {
    if (Number(other.dataset.order) > order) {
      container.insertBefore(section, other);
      return;
    }
  }
  container.append(section);
}

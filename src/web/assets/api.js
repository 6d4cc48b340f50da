// HTTP side of the web app: fetch wrappers, the in-memory access token and
// the shared refresh.
//
// The access token lives only in this module's memory (never in
// localStorage, sessionStorage or a cookie). The refresh token is the
// server's HttpOnly cookie, which the browser sends by itself on
// same-origin requests.

/** An error answered by the API (`{"error":{"code","message"}}`) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** The code of the error thrown when the session is over (refresh refused). */
export const SESSION_ENDED = 'session_ended';

let accessToken = null;
// Whether a session is established (login or refresh succeeded, no logout or
// refused refresh since). Only the end of an established session is
// reported to the session-end listener.
let signedIn = false;
// The refresh in flight, shared by every caller that needs one.
let refreshing = null;
// Bumped whenever the session is dropped: a refresh that was in flight then
// belongs to an older session and must not sign the user back in.
let generation = 0;
let sessionEndListener = () => {};

/** Registers the function called once when an established session ends because refresh was refused. */
export function onSessionEnd(listener) {
  sessionEndListener = listener;
}

export function isSignedIn() {
  return signedIn;
}

/** Whether `error` means the session is over (the caller must not retry). */
export function isSessionEnded(error) {
  return error instanceof ApiError && error.code === SESSION_ENDED;
}

function sessionEndedError() {
  return new ApiError(401, SESSION_ENDED, 'You have been signed out. Please sign in again.');
}

function dropSession() {
  accessToken = null;
  signedIn = false;
  generation += 1;
}

async function send(method, path, { body, token } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network_error', 'Cannot reach the server. Check your connection and try again.');
  }
}

/** The JSON body of a successful response (null when empty), or throws the API's error. */
async function parse(response) {
  let data = null;
  const text = await response.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) return data;
  const error = data && typeof data === 'object' ? data.error : null;
  throw new ApiError(
    response.status,
    (error && typeof error.code === 'string' && error.code) || `http_${response.status}`,
    (error && typeof error.message === 'string' && error.message) || `The request failed (HTTP ${response.status}).`,
  );
}

/**
 * Exchanges the refresh cookie for a new access token. Concurrent callers
 * share one request (the server rotates the refresh token on every use).
 * Resolves to the new access token. Rejects with SESSION_ENDED when the
 * server refuses (4xx) — then the session is dropped and, if one was
 * established, the session-end listener is called — or with another
 * ApiError on a transient failure (network, 5xx), leaving the session as is.
 */
export function refreshSession() {
  if (!refreshing) {
    refreshing = (async () => {
      const started = generation;
      try {
        // The handler reads only the cookie: no body, no Content-Type.
        const response = await send('POST', '/v1/auth/refresh');
        if (started !== generation) throw sessionEndedError(); // logged out meanwhile
        if (!response.ok) {
          const error = await parse(response).catch((e) => e);
          // 401: no valid session (expired, revoked, logged out elsewhere).
          // 403 other than a refused origin: the user may no longer sign in.
          // Anything else (a refused origin, 408, 429, 5xx) is not the
          // session's end: report it and keep the session.
          const ended = response.status === 401 || (response.status === 403 && error.code !== 'forbidden_origin');
          if (!ended) throw error;
          const wasSignedIn = signedIn;
          dropSession();
          if (wasSignedIn) queueMicrotask(() => sessionEndListener());
          throw sessionEndedError();
        }
        const data = await parse(response);
        if (!data || typeof data.access_token !== 'string') {
          throw new ApiError(response.status, 'bad_response', 'The server answered the refresh unexpectedly.');
        }
        if (started !== generation) throw sessionEndedError();
        accessToken = data.access_token;
        signedIn = true;
        return accessToken;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

/**
 * An authenticated call. On 401: refresh once (shared with any concurrent
 * caller) and retry once.
 */
async function call(method, path, body) {
  if (!signedIn || !accessToken) throw sessionEndedError();
  const used = accessToken;
  let response = await send(method, path, { body, token: used });
  if (response.status === 401) {
    // Another caller may have refreshed meanwhile: then just use its token.
    const token = accessToken && accessToken !== used ? accessToken : await refreshSession();
    response = await send(method, path, { body, token });
  }
  return parse(response);
}

const enc = encodeURIComponent;

// ---- sessions ----

/** Signs in; rejects with the server's error (e.g. 401 invalid_credentials) on failure. */
export async function login(email, password) {
  const response = await send('POST', '/v1/auth/login', { body: { email, password } });
  const data = await parse(response);
  if (!data || typeof data.access_token !== 'string') {
    throw new ApiError(response.status, 'bad_response', 'The server answered the login unexpectedly.');
  }
  accessToken = data.access_token;
  signedIn = true;
  return data;
}

/**
 * Forgets the access token and ends the session on the server. Rejects with
 * an ApiError when the server could not end it (offline, or refused): the
 * refresh cookie may then still be valid, and the caller should say so.
 */
export async function logout() {
  dropSession();
  const response = await send('POST', '/v1/auth/logout');
  if (!response.ok) await parse(response);
}

/** `{"id","kind","org","scopes","email"?,"role"?}` */
export function me() {
  return call('GET', '/v1/me');
}

// ---- conversations and runs ----

/** One page: `{"items":[…],"next_cursor":string|null}`, oldest first. */
export function listConversations(cursor, limit = 20) {
  let path = `/v1/conversations?limit=${limit}`;
  if (cursor) path += `&cursor=${enc(cursor)}`;
  return call('GET', path);
}

export function createConversation(title) {
  return call('POST', '/v1/conversations', { title, agent: 'demo' });
}

export function getConversation(id) {
  return call('GET', `/v1/conversations/${enc(id)}`);
}

/** Queues a run; resolves to the run (`{"id","status",…}`); 409 run_in_progress when one is active. */
export function startRun(conversationId, input) {
  return call('POST', `/v1/conversations/${enc(conversationId)}/runs`, { input });
}

/** HTTP fallback for cancelling when the stream is down. */
export function cancelRun(runId) {
  return call('POST', `/v1/runs/${enc(runId)}/cancel`);
}

/** HTTP fallback for answering when the stream is down. */
export function answerInput(inputId, value) {
  return call('POST', `/v1/inputs/${enc(inputId)}`, { value });
}

/** A single-use WebSocket token for the conversation: `{"token","expires_in"}`. */
export function mintWsToken(conversationId) {
  return call('POST', `/v1/conversations/${enc(conversationId)}/ws-token`);
}

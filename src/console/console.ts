import { type Meta, PushRelay } from '../client/index.js';

// The web console: it talks to the relay that served it, with the key the
// operator signs in with (kept in memory only). Everything the relay returns
// is written with textContent, never as HTML: channel names, user ids and
// message data come from publishers and clients.

const POLL_MS = 2000;
const TAIL_ROWS = 200;

interface NodeRow {
  id: string;
  sockets: number;
  users: number;
  startedAt: number;
  lastSeen: number;
  connections: number;
  publishes: number;
  deliveries: number;
}
type Rates = { connections: number; publishes: number; deliveries: number };

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
};

let secret = '';
let pollTimer: ReturnType<typeof setTimeout> | undefined;
let tail: PushRelay | undefined;
const previous = new Map<string, NodeRow>();
const rates = new Map<string, Rates>();

async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${secret}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = (await res.json().catch(() => ({}))) as { error?: { code: string; message: string } };
  if (!res.ok) {
    throw new ApiError(
      res.status,
      answer.error?.code ?? 'http',
      answer.error?.message ?? `HTTP ${res.status}`,
    );
  }
  return answer as T;
}

function cell(row: HTMLTableRowElement, text: string, className?: string): void {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

function ago(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

/** Rates from two heartbeats of the same node: the totals are as of `lastSeen`. */
function updateRates(node: NodeRow): void {
  const before = previous.get(node.id);
  if (before && node.lastSeen > before.lastSeen) {
    const seconds = (node.lastSeen - before.lastSeen) / 1000;
    rates.set(node.id, {
      connections: Math.max(0, node.connections - before.connections) / seconds,
      publishes: Math.max(0, node.publishes - before.publishes) / seconds,
      deliveries: Math.max(0, node.deliveries - before.deliveries) / seconds,
    });
  }
  if (!before || node.lastSeen > before.lastSeen) previous.set(node.id, node);
}

function showNodes(answer: { node: string; mode: string; nodes: NodeRow[] }): void {
  $('where').textContent = `${answer.mode} · answered by ${answer.node}`;
  const tbody = $<HTMLTableSectionElement>('node-rows');
  tbody.replaceChildren();
  const total = { sockets: 0, users: 0, connections: 0, publishes: 0, deliveries: 0 };
  for (const node of answer.nodes) {
    updateRates(node);
    const r = rates.get(node.id);
    total.sockets += node.sockets;
    total.users += node.users;
    if (r) {
      total.connections += r.connections;
      total.publishes += r.publishes;
      total.deliveries += r.deliveries;
    }
    const row = tbody.insertRow();
    row.dataset.node = node.id;
    cell(row, node.id);
    cell(row, String(node.sockets));
    cell(row, String(node.users));
    cell(row, r ? fmt(r.connections) : '–');
    cell(row, r ? fmt(r.publishes) : '–');
    cell(row, r ? fmt(r.deliveries) : '–');
    cell(row, ago(node.startedAt));
    cell(row, `${ago(node.lastSeen)} ago`);
  }
  const live = new Set(answer.nodes.map((n) => n.id));
  for (const id of [...previous.keys()]) {
    if (!live.has(id)) {
      previous.delete(id);
      rates.delete(id);
    }
  }
  $('total-nodes').textContent = String(answer.nodes.length);
  $('total-sockets').textContent = String(total.sockets);
  $('total-users').textContent = String(total.users);
  $('rate-connections').textContent = fmt(total.connections);
  $('rate-publishes').textContent = fmt(total.publishes);
  $('rate-deliveries').textContent = fmt(total.deliveries);
  $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function poll(): Promise<void> {
  try {
    showNodes(await api('GET', '/v1/nodes'));
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      signOut(err.message);
      return;
    }
    $('updated').textContent = `could not reach the relay: ${(err as Error).message}`;
  }
  pollTimer = setTimeout(() => void poll(), POLL_MS);
}

async function signIn(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  secret = $<HTMLInputElement>('secret').value.trim();
  $('login-error').textContent = '';
  try {
    // Listing nodes needs the admin scope: a key without it cannot open the console.
    showNodes(await api('GET', '/v1/nodes'));
  } catch (err) {
    secret = '';
    $('login-error').textContent =
      err instanceof ApiError
        ? `${err.code}: ${err.message}`
        : `could not reach the relay: ${(err as Error).message}`;
    return;
  }
  $<HTMLInputElement>('secret').value = '';
  $('login').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
  pollTimer = setTimeout(() => void poll(), POLL_MS);
}

function signOut(reason = ''): void {
  secret = '';
  clearTimeout(pollTimer);
  stopTail();
  previous.clear();
  rates.clear();
  $('app').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('where').textContent = '';
  $('login-error').textContent = reason;
}

async function lookUpPresence(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const target = $<HTMLInputElement>('presence-target').value.trim();
  const list = $('presence-users');
  const summary = $('presence-summary');
  list.replaceChildren();
  summary.className = '';
  try {
    if (target.startsWith('user:')) {
      const user = target.slice('user:'.length);
      const p = await api<{ online: boolean; sockets: number }>(
        'GET',
        `/v1/users/${encodeURIComponent(user)}/presence`,
      );
      summary.textContent = p.online ? `${user} is online with ${p.sockets} socket(s)` : `${user} is offline`;
      return;
    }
    const p = await api<{ sockets: number; users: { id: string; sockets: number }[] }>(
      'GET',
      `/v1/channels/${encodeURIComponent(target)}/presence`,
    );
    summary.textContent = `${p.users.length} user(s), ${p.sockets} socket(s) in ${target}`;
    for (const u of p.users) {
      const li = document.createElement('li');
      li.textContent = `${u.id} (${u.sockets})`;
      list.append(li);
    }
  } catch (err) {
    summary.className = 'error';
    summary.textContent = describe(err);
  }
}

async function publish(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const out = $('publish-result');
  out.className = '';
  const kind = $<HTMLSelectElement>('publish-kind').value;
  const names = $<HTMLInputElement>('publish-targets')
    .value.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const body: Record<string, unknown> = { event: $<HTMLInputElement>('publish-event').value.trim() };
  const dataText = $<HTMLTextAreaElement>('publish-data').value.trim();
  try {
    if (dataText !== '') body.data = JSON.parse(dataText);
  } catch {
    out.className = 'error';
    out.textContent = 'data is not valid JSON';
    return;
  }
  if (kind === 'broadcast') body.broadcast = true;
  else body[kind] = names;
  try {
    out.textContent = JSON.stringify(await api('POST', '/v1/publish', body), null, 2);
  } catch (err) {
    out.className = 'error';
    out.textContent = describe(err);
  }
}

function tailStatus(text: string, error = false): void {
  const el = $('tail-status');
  el.textContent = text;
  el.className = error ? 'error' : '';
}

function addTailRow(data: unknown, meta: Meta): void {
  const tbody = $<HTMLTableSectionElement>('tail-rows');
  const row = tbody.insertRow(0);
  cell(row, new Date(meta.ts).toLocaleTimeString());
  cell(row, meta.event);
  cell(row, String(meta.offset));
  cell(row, JSON.stringify(data), 'data');
  while (tbody.rows.length > TAIL_ROWS) tbody.deleteRow(-1);
}

/**
 * Watches a channel through the relay's own client module, with tokens from
 * the admin-only tail-token route: the console sees exactly what a
 * subscriber sees, recovery included.
 */
function startTail(event: SubmitEvent): void {
  event.preventDefault();
  stopTail();
  const channel = $<HTMLInputElement>('tail-channel').value.trim();
  $<HTMLTableSectionElement>('tail-rows').replaceChildren();
  const relay = new PushRelay(location.origin, {
    token: async () =>
      (await api<{ token: string }>('POST', `/v1/channels/${encodeURIComponent(channel)}/tail-token`)).token,
  });
  tail = relay;
  tailStatus(`connecting to watch ${channel}…`);
  relay.on('pushrelay:error', (err) => tailStatus(`${err.code}: ${err.message}`, true));
  relay.on('pushrelay:reload', () => tailStatus(`some messages of ${channel} could not be recovered`, true));
  relay.on('pushrelay:disconnect', (n) => tailStatus(`disconnected by the relay: ${n.reason}`, true));
  relay.subscribe(channel, addTailRow).ready.then(
    (answer) => tailStatus(`watching ${channel} on ${relay.node} from offset ${answer.offset}`),
    (err: Error & { code?: string }) => tailStatus(`${err.code ?? 'error'}: ${err.message}`, true),
  );
  $<HTMLButtonElement>('tail-stop').disabled = false;
}

function stopTail(): void {
  tail?.close();
  tail = undefined;
  $<HTMLButtonElement>('tail-stop').disabled = true;
  tailStatus('');
}

function describe(err: unknown): string {
  return err instanceof ApiError ? `${err.code}: ${err.message}` : `error: ${(err as Error).message}`;
}

$<HTMLFormElement>('login-form').addEventListener('submit', (e) => void signIn(e));
$('sign-out').addEventListener('click', () => signOut());
$<HTMLFormElement>('presence-form').addEventListener('submit', (e) => void lookUpPresence(e));
$<HTMLFormElement>('publish-form').addEventListener('submit', (e) => void publish(e));
$<HTMLFormElement>('tail-form').addEventListener('submit', startTail);
$('tail-stop').addEventListener('click', stopTail);

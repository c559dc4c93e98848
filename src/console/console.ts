import uPlot from 'uplot';
import { type Meta, PushRelay } from '../client/index.js';
import type { Sample } from '../metrics/samples.js';

// The web console: it talks to the relay that served it, with the key the
// operator signs in with (kept in memory only). Nothing of the cluster is
// fetched before sign-in. Everything the relay returns is written with
// textContent, never as HTML: channel names, user ids, message data and
// dead-letter bodies come from publishers and clients.

/** What the page keeps per node, in milliseconds. */
const WINDOW_MS = 15 * 60_000;
const TAIL_ROWS = 200;
const DEAD_PAGE = 10;
/** Characters of a dead letter's body shown before it is opened. */
const BODY_PREVIEW = 120;
/** Dead-letter lists on their first page are refreshed every this many polls. */
const DEAD_REFRESH_POLLS = 5;
const COLORS = ['#2f6fed', '#e8883a', '#2fa36b', '#c0362c', '#8a5cd1', '#1fa2b8', '#b8a11f', '#d15c9e'];

interface NodeStats {
  id: string;
  startedAt: number;
  lastSeen: number;
  sockets: number;
  users: number;
  draining: boolean;
  version: string | null;
  samples: Sample[];
}
interface StatsAnswer {
  node: string;
  mode: string;
  interval_ms: number;
  nodes: NodeStats[];
}

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
/** Bumped at sign-in and sign-out: a poll answered after the operator left is dropped, not rescheduled. */
let session = 0;
let pollTimer: ReturnType<typeof setTimeout> | undefined;
let polls = 0;
let intervalMs = 5000;
let tail: PushRelay | undefined;
/** Per node, oldest first, the last 15 minutes. */
const history = new Map<string, Sample[]>();
let liveNodes: NodeStats[] = [];

async function api<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
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

function cell(row: HTMLTableRowElement, text: string, className?: string): HTMLTableCellElement {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

function ago(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

function describe(err: unknown): string {
  return err instanceof ApiError ? `${err.code}: ${err.message}` : `error: ${(err as Error).message}`;
}

// --- charts -----------------------------------------------------------------

interface Chart {
  plot: uPlot | undefined;
  /** The series labels the plot was made with: a new source or node makes a new plot. */
  labels: string;
}
const charts = new Map<string, Chart>();

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

/** Draws one chart; x in seconds, one array of values per label. */
function draw(id: string, labels: string[], xs: number[], ys: (number | null)[][]): void {
  const el = $(id);
  const chart = charts.get(id) ?? { plot: undefined, labels: '' };
  charts.set(id, chart);
  const data = [xs, ...ys] as uPlot.AlignedData;
  const width = Math.max(200, el.clientWidth - 8);
  if (chart.plot === undefined || chart.labels !== labels.join('\n')) {
    chart.plot?.destroy();
    const axis = {
      stroke: cssVar('--muted'),
      grid: { stroke: cssVar('--line'), width: 1 },
      ticks: { show: false },
    };
    chart.plot = new uPlot(
      {
        width,
        height: 150,
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
        axes: [
          {
            ...axis,
            // Room for one label per tick: "03:32:05" is about 60 px wide.
            space: 80,
            // One line of wall-clock time; the default adds a date row that only takes room.
            values: (_u, splits) => {
              const span = (splits[splits.length - 1] ?? 0) - (splits[0] ?? 0);
              const style: Intl.DateTimeFormatOptions =
                span < 180
                  ? { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }
                  : { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
              return splits.map((t) => new Date(t * 1000).toLocaleTimeString([], style));
            },
          },
          { ...axis, size: 48 },
        ],
        // Series names only: values under a moving cursor help little on a chart that updates every few seconds.
        legend: { live: false },
        series: [
          {},
          ...labels.map((label, i) => ({
            label,
            stroke: COLORS[i % COLORS.length]!,
            width: 1.5,
            points: { show: false },
          })),
        ],
      },
      data,
      el,
    );
    chart.labels = labels.join('\n');
  } else {
    chart.plot.setData(data);
    if (Math.abs(chart.plot.width - width) > 4) chart.plot.setSize({ width, height: 150 });
  }
  // For tests and curious operators: how much the chart holds.
  el.dataset.points = String(xs.length);
  const last = ys.map((y) => y[y.length - 1] ?? null);
  el.dataset.last = JSON.stringify(last);
  // The canvas says nothing to a screen reader: the newest values, in words.
  let summary = el.querySelector<HTMLElement>('.sr-only');
  if (summary === null) {
    summary = document.createElement('span');
    summary.className = 'sr-only';
    el.querySelector('figcaption')?.append(summary);
  }
  summary.textContent = ` now: ${labels.map((l, i) => `${l} ${last[i] === null || last[i] === undefined ? 'no data' : fmt(last[i]!)}`).join(', ')}`;
}

type Agg = 'sum' | 'max';

/**
 * Lines up the chosen nodes' samples on the sampling grid (nodes sample on
 * their own clocks) and combines them per grid point: rates and counts add
 * up over the cluster; latency, lag and the shared webhook queue take the
 * worst node.
 */
function series(nodes: string[], pick: (s: Sample) => number | null, agg: Agg): Map<number, number | null> {
  const out = new Map<number, number | null>();
  for (const id of nodes) {
    for (const s of history.get(id) ?? []) {
      const x = Math.round(s.ts / intervalMs) * intervalMs;
      const v = pick(s);
      const had = out.get(x);
      if (v === null) {
        if (!out.has(x)) out.set(x, null);
        continue;
      }
      out.set(x, had === undefined || had === null ? v : agg === 'sum' ? had + v : Math.max(had, v));
    }
  }
  return out;
}

function drawCharts(): void {
  const scope = $<HTMLSelectElement>('scope').value;
  const nodes = scope === '' ? [...history.keys()] : [scope];
  const grid = new Set<number>();
  for (const id of nodes)
    for (const s of history.get(id) ?? []) grid.add(Math.round(s.ts / intervalMs) * intervalMs);
  const xsMs = [...grid].sort((a, b) => a - b);
  const xs = xsMs.map((x) => x / 1000);
  const line = (pick: (s: Sample) => number | null, agg: Agg) => {
    const m = series(nodes, pick, agg);
    return xsMs.map((x) => m.get(x) ?? null);
  };
  const sources = new Set<string>();
  for (const id of nodes)
    for (const s of history.get(id) ?? []) for (const k of Object.keys(s.publishes)) sources.add(k);
  const sourceList = [...sources].sort();

  draw('chart-connections', ['sockets'], xs, [line((s) => s.connections, 'sum')]);
  draw(
    'chart-publishes',
    sourceList.length > 0 ? sourceList : ['(none yet)'],
    xs,
    sourceList.length > 0
      ? sourceList.map((src) => line((s) => s.publishes[src] ?? 0, 'sum'))
      : [xs.map(() => 0)],
  );
  draw('chart-deliveries', ['deliveries/s'], xs, [line((s) => s.deliveries, 'sum')]);
  draw('chart-latency', scope === '' ? ['p50 (slowest node)', 'p99 (slowest node)'] : ['p50', 'p99'], xs, [
    line((s) => s.latency_p50_ms, 'max'),
    line((s) => s.latency_p99_ms, 'max'),
  ]);
  draw('chart-rejections', ['rejections/s'], xs, [line((s) => s.rate_limited, 'sum')]);
  draw('chart-lag', ['lag (oldest entry read)'], xs, [line((s) => s.ingest_lag_s, 'max')]);
  draw('chart-webhooks', ['queued + retrying'], xs, [line((s) => s.webhook_queue, 'max')]);

  const newest = (pick: (s: Sample) => number) =>
    nodes.reduce((sum, id) => {
      const h = history.get(id);
      const s = h?.[h.length - 1];
      return s && Date.now() - s.ts < intervalMs * 3 ? sum + pick(s) : sum;
    }, 0);
  $('rate-publishes').textContent = fmt(newest((s) => Object.values(s.publishes).reduce((a, b) => a + b, 0)));
  $('rate-deliveries').textContent = fmt(newest((s) => s.deliveries));
  // Entries of the ingest stream read by no node yet or not finished, summed over the nodes working on it.
  $('ingest-pending').textContent = String(newest((s) => s.ingest_pending));
}

function merge(answer: StatsAnswer): void {
  intervalMs = Math.max(1000, answer.interval_ms);
  const cutoff = Date.now() - WINDOW_MS;
  for (const node of answer.nodes) {
    const h = history.get(node.id) ?? [];
    const lastTs = h[h.length - 1]?.ts ?? 0;
    for (const s of node.samples) if (s.ts > lastTs) h.push(s);
    history.set(node.id, h);
  }
  for (const [id, h] of history) {
    const keep = h.filter((s) => s.ts >= cutoff);
    if (keep.length === 0) history.delete(id);
    else history.set(id, keep);
  }
  liveNodes = answer.nodes;
}

function showNodes(answer: StatsAnswer): void {
  $('where').textContent = `${answer.mode} · answered by ${answer.node}`;
  const tbody = $<HTMLTableSectionElement>('node-rows');
  tbody.replaceChildren();
  let sockets = 0;
  for (const node of answer.nodes) {
    sockets += node.sockets;
    const row = tbody.insertRow();
    row.dataset.node = node.id;
    cell(row, node.id);
    cell(row, node.draining ? 'draining' : 'serving', node.draining ? 'warn' : 'ok');
    cell(row, node.version ?? '–');
    cell(row, String(node.sockets));
    cell(row, String(node.users));
    cell(row, ago(node.startedAt));
    cell(row, `${ago(node.lastSeen)} ago`);
  }
  $('total-nodes').textContent = String(answer.nodes.length);
  $('total-sockets').textContent = String(sockets);

  const select = $<HTMLSelectElement>('scope');
  const wanted = ['', ...answer.nodes.map((n) => n.id)];
  const have = [...select.options].map((o) => o.value);
  if (wanted.join('\n') !== have.join('\n')) {
    const chosen = select.value;
    select.replaceChildren(
      ...wanted.map((id) => {
        const o = document.createElement('option');
        o.value = id;
        o.textContent = id === '' ? 'the whole cluster' : `node ${id}`;
        return o;
      }),
    );
    select.value = wanted.includes(chosen) ? chosen : '';
  }
}

/** Only samples the page has not got: from the oldest of the nodes' newest samples. */
function since(): number {
  let min = Number.POSITIVE_INFINITY;
  for (const n of liveNodes) {
    const h = history.get(n.id);
    min = Math.min(min, h?.[h.length - 1]?.ts ?? 0);
  }
  return Number.isFinite(min) ? min : 0;
}

async function poll(): Promise<void> {
  const mine = session;
  try {
    const answer = await api<StatsAnswer>('GET', `/v1/admin/stats?since=${since()}`);
    if (mine !== session) return;
    merge(answer);
    showNodes(answer);
    drawCharts();
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (++polls % DEAD_REFRESH_POLLS === 0) refreshDeadLetters();
  } catch (err) {
    if (mine !== session) return;
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      signOut(err.message);
      return;
    }
    $('updated').textContent = `could not reach the relay: ${(err as Error).message}`;
  }
  pollTimer = setTimeout(() => void poll(), intervalMs);
}

// --- dead letters -------------------------------------------------------------

interface IngestDead {
  id: string;
  ts: number;
  reason: string;
  entry: string;
  source: string;
  body: string;
}
interface WebhookDead {
  id: string;
  event: string;
  receiver: string;
  last_error: string;
  attempts: number;
  ts: number;
}

/** A list of dead letters paged newest first: `page` is the cursor it starts at (undefined: the newest). */
interface Pager {
  page: string | undefined;
  next: string | null;
}
const ingestPager: Pager = { page: undefined, next: null };
let ingestSeq = 0;
let webhookSeq = 0;
const webhookPager: Pager = { page: undefined, next: null };

function actionButton(
  label: string,
  what: string,
  run: () => Promise<void>,
  quiet = false,
): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.setAttribute('aria-label', `${label} ${what}`);
  if (quiet) b.className = 'quiet';
  b.addEventListener('click', () => {
    b.disabled = true;
    void run().finally(() => {
      b.disabled = false;
    });
  });
  return b;
}

/** Bodies up to 1 KiB: the first line of it in the table, all of it one click (or Enter) away. */
function bodyCell(row: HTMLTableRowElement, body: string): void {
  const td = cell(row, '', 'data');
  if (body.length <= BODY_PREVIEW) {
    td.textContent = body;
    return;
  }
  const details = document.createElement('details');
  const summary = document.createElement('summary');
  summary.textContent = `${body.slice(0, BODY_PREVIEW)}…`;
  const full = document.createElement('pre');
  full.textContent = body;
  details.append(summary, full);
  td.append(details);
}

async function loadIngestDead(cursor: string | undefined): Promise<void> {
  const status = $('ingest-dead-status');
  // Only the newest request's answer is shown: an older one may list a letter retried since.
  const seq = ++ingestSeq;
  const mine = session;
  try {
    const q = `limit=${DEAD_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = await api<{
      available: boolean;
      total: number;
      items: IngestDead[];
      next_cursor: string | null;
    }>('GET', `/v1/admin/ingest/dead?${q}`);
    if (mine !== session || seq !== ingestSeq) return;
    ingestPager.page = cursor;
    ingestPager.next = page.next_cursor;
    $<HTMLButtonElement>('ingest-dead-more').disabled = page.next_cursor === null;
    const tbody = $<HTMLTableSectionElement>('ingest-dead-rows');
    tbody.replaceChildren();
    $('ingest-list').hidden = !page.available;
    if (!page.available) {
      status.textContent = 'the ingest stream needs Redis: this node runs standalone';
      $('ingest-dead-total').textContent = '';
      return;
    }
    $('ingest-dead-total').textContent = `(${page.total})`;
    if (status.dataset.keep !== '1') status.textContent = page.items.length === 0 ? 'no dead letters' : '';
    for (const d of page.items) {
      const row = tbody.insertRow();
      row.dataset.id = d.id;
      cell(row, new Date(d.ts).toLocaleString());
      cell(row, d.source === 'stream' ? d.reason : `${d.reason} (${d.source})`);
      cell(row, d.entry, 'mono');
      bodyCell(row, d.body);
      const actions = cell(row, '', 'actions');
      actions.append(
        actionButton('Retry', `dead letter ${d.id}`, () => ingestAction('retry', d.id)),
        actionButton('Discard', `dead letter ${d.id}`, () => ingestAction('discard', d.id), true),
      );
    }
  } catch (err) {
    status.textContent = describe(err);
  }
}

async function ingestAction(action: 'retry' | 'discard', id: string): Promise<void> {
  const status = $('ingest-dead-status');
  try {
    if (action === 'retry') {
      const r = await api<{ requeued_as: string }>(
        'POST',
        `/v1/admin/ingest/dead/${encodeURIComponent(id)}/retry`,
      );
      status.textContent = `${id} re-queued to the ingest stream as ${r.requeued_as}`;
    } else {
      await api('DELETE', `/v1/admin/ingest/dead/${encodeURIComponent(id)}`);
      status.textContent = `${id} discarded`;
    }
    removeRow('ingest-dead-rows', id);
  } catch (err) {
    status.textContent = describe(err);
  }
  status.dataset.keep = '1';
  await loadIngestDead(ingestPager.page);
  status.dataset.keep = '';
}

/** A letter retried or discarded leaves the page at once, not when the list is next read. */
function removeRow(tbody: string, id: string): void {
  for (const row of [...$<HTMLTableSectionElement>(tbody).rows]) if (row.dataset.id === id) row.remove();
}

async function loadWebhooks(cursor: string | undefined): Promise<void> {
  const status = $('webhook-status');
  // Only the newest request's answer is shown: an older one may list a letter retried since.
  const seq = ++webhookSeq;
  const mine = session;
  try {
    const stats = await api<{
      configured: boolean;
      queued: number;
      retrying: number;
      dead: number;
      receivers: { receiver: string; queued: number; retrying: number; dead: number }[];
    }>('GET', '/v1/admin/webhooks');
    if (mine !== session || seq !== webhookSeq) return;
    $('webhook-list').hidden = !stats.configured;
    if (!stats.configured) {
      status.textContent = 'webhooks not configured';
      $('webhook-stats').textContent = '';
      $('webhook-dead-rows').replaceChildren();
      return;
    }
    $('webhook-stats').textContent =
      `(${stats.queued} queued · ${stats.retrying} retrying · ${stats.dead} dead)`;
    const q = `limit=${DEAD_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = await api<{ items: WebhookDead[]; next_cursor: string | null }>(
      'GET',
      `/v1/admin/webhooks/dead?${q}`,
    );
    if (mine !== session || seq !== webhookSeq) return;
    webhookPager.page = cursor;
    webhookPager.next = page.next_cursor;
    $<HTMLButtonElement>('webhook-dead-more').disabled = page.next_cursor === null;
    if (status.dataset.keep !== '1') {
      status.textContent =
        stats.receivers
          .map((r) => `${r.receiver}: ${r.queued} queued, ${r.retrying} retrying, ${r.dead} dead`)
          .join(' · ') || 'no receivers';
    }
    const tbody = $<HTMLTableSectionElement>('webhook-dead-rows');
    tbody.replaceChildren();
    for (const d of page.items) {
      const row = tbody.insertRow();
      row.dataset.id = d.id;
      cell(row, new Date(d.ts).toLocaleString());
      cell(row, d.event);
      cell(row, d.receiver, 'mono');
      cell(row, String(d.attempts));
      cell(row, d.last_error, 'data');
      const actions = cell(row, '', 'actions');
      actions.append(
        actionButton('Retry', `webhook ${d.id}`, () => webhookAction('retry', d.id)),
        actionButton('Discard', `webhook ${d.id}`, () => webhookAction('discard', d.id), true),
      );
    }
  } catch (err) {
    status.textContent = describe(err);
  }
}

async function webhookAction(action: 'retry' | 'discard', id: string): Promise<void> {
  const status = $('webhook-status');
  try {
    if (action === 'retry') await api('POST', `/v1/admin/webhooks/dead/${encodeURIComponent(id)}/retry`);
    else await api('DELETE', `/v1/admin/webhooks/dead/${encodeURIComponent(id)}`);
    status.textContent = `${id} ${action === 'retry' ? 'queued again' : 'discarded'}`;
    removeRow('webhook-dead-rows', id);
  } catch (err) {
    status.textContent = describe(err);
  }
  status.dataset.keep = '1';
  await loadWebhooks(webhookPager.page);
  status.dataset.keep = '';
}

/** Lists on their first page follow new dead letters; an operator paging back is left where they are. */
function refreshDeadLetters(): void {
  if (ingestPager.page === undefined) void loadIngestDead(undefined);
  if (webhookPager.page === undefined) void loadWebhooks(undefined);
}

// --- sign-in --------------------------------------------------------------------

async function signIn(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  secret = $<HTMLInputElement>('secret').value.trim();
  $('login-error').textContent = '';
  let first: StatsAnswer;
  try {
    // The stats need the admin scope: a key without it cannot open the console.
    first = await api<StatsAnswer>('GET', '/v1/admin/stats');
  } catch (err) {
    secret = '';
    $('login-error').textContent =
      err instanceof ApiError
        ? `${err.code}: ${err.message}`
        : `could not reach the relay: ${(err as Error).message}`;
    return;
  }
  $<HTMLInputElement>('secret').value = '';
  session++;
  $('login').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
  merge(first);
  showNodes(first);
  drawCharts();
  refreshDeadLetters();
  $('scope').focus();
  pollTimer = setTimeout(() => void poll(), intervalMs);
}

function signOut(reason = ''): void {
  secret = '';
  session++;
  clearTimeout(pollTimer);
  stopTail();
  history.clear();
  liveNodes = [];
  for (const c of charts.values()) c.plot?.destroy();
  charts.clear();
  for (const id of ['node-rows', 'ingest-dead-rows', 'webhook-dead-rows', 'presence-users'])
    $(id).replaceChildren();
  $('app').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('where').textContent = '';
  $('login-error').textContent = reason;
  $('secret').focus();
}

// --- presence, publish, tail ----------------------------------------------------

async function lookUpPresence(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const target = $<HTMLInputElement>('presence-target').value.trim();
  const list = $<HTMLTableSectionElement>('presence-users');
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
    const p = await api<{ sockets: number; users: { id: string; sockets: number; user_info?: unknown }[] }>(
      'GET',
      `/v1/channels/${encodeURIComponent(target)}/presence`,
    );
    summary.textContent = `${p.users.length} user(s), ${p.sockets} socket(s) in ${target}`;
    for (const u of p.users) {
      const row = list.insertRow();
      cell(row, u.id);
      cell(row, String(u.sockets));
      cell(row, u.user_info === undefined ? '–' : JSON.stringify(u.user_info), 'data');
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
  bodyCell(row, JSON.stringify(data));
  while (tbody.rows.length > TAIL_ROWS) tbody.deleteRow(-1);
}

/**
 * Watches a channel (a user's own, `$broadcast`) through the relay's own
 * client module, with tokens from the admin-only tail-token route: the
 * console sees exactly what a subscriber sees.
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

$<HTMLFormElement>('login-form').addEventListener('submit', (e) => void signIn(e));
$('sign-out').addEventListener('click', () => signOut());
$('scope').addEventListener('change', () => drawCharts());
$('ingest-dead-first').addEventListener('click', () => void loadIngestDead(undefined));
$('ingest-dead-more').addEventListener('click', () => void loadIngestDead(ingestPager.next ?? undefined));
$('webhook-dead-first').addEventListener('click', () => void loadWebhooks(undefined));
$('webhook-dead-more').addEventListener('click', () => void loadWebhooks(webhookPager.next ?? undefined));
$<HTMLFormElement>('presence-form').addEventListener('submit', (e) => void lookUpPresence(e));
$<HTMLFormElement>('publish-form').addEventListener('submit', (e) => void publish(e));
$<HTMLFormElement>('tail-form').addEventListener('submit', startTail);
$('tail-stop').addEventListener('click', stopTail);
let resizeTimer: ReturnType<typeof setTimeout> | undefined;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (!$('app').hidden) drawCharts();
  }, 200);
});

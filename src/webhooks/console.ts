import type { WebhookAdmin as ConsoleWebhookAdmin, WebhookDeadLetter } from '../http/admin-webhooks.js';
import type { WebhookAdmin } from './index.js';
import type { DeadLetter } from './types.js';

// The webhook queue as the console's operator routes see it
// (src/http/admin-webhooks.ts): totals per receiver, and dead letters paged
// by offset (the cursor is the offset of the next page).

/** Dead letters counted per receiver for the stats: the first this many. */
const COUNT_DEAD = 1000;

function eventOf(letter: DeadLetter): string {
  const first = letter.items[0];
  if (first === undefined) return 'unknown';
  try {
    const parsed = JSON.parse(first.json) as { type?: unknown };
    if (typeof parsed.type === 'string') return parsed.type;
  } catch {
    // The offline fallback's items are `<delivery id> <body>`.
  }
  return 'message.undelivered';
}

export function consoleWebhookAdmin(admin: WebhookAdmin): ConsoleWebhookAdmin {
  const label = new Map(admin.endpoints.map((e) => [e.id, e.label]));
  const receiverOf = (endpoint: string) => label.get(endpoint) ?? endpoint;
  const toLetter = (d: DeadLetter): WebhookDeadLetter => ({
    id: d.id,
    event: eventOf(d),
    receiver: receiverOf(d.endpoint),
    last_error: d.reason,
    attempts: d.attempts,
    ts: d.ts,
  });
  return {
    async stats() {
      const [s, dead] = await Promise.all([admin.stats(), admin.queue.deadLetters(0, COUNT_DEAD)]);
      const receivers = admin.endpoints.map((e) => {
        const q = s.endpoints[e.id] ?? { depth: 0, retrying: 0 };
        return {
          receiver: e.label,
          queued: Math.max(0, q.depth - q.retrying),
          retrying: q.retrying,
          dead: dead.items.filter((d) => d.endpoint === e.id).length,
        };
      });
      return {
        queued: receivers.reduce((n, r) => n + r.queued, 0),
        retrying: receivers.reduce((n, r) => n + r.retrying, 0),
        dead: s.deadLetters,
        receivers,
      };
    },
    async listDead(cursor, limit) {
      const offset = cursor === undefined ? 0 : Math.max(0, Number.parseInt(cursor, 10) || 0);
      const page = await admin.queue.deadLetters(offset, limit);
      const next = offset + page.items.length;
      return { items: page.items.map(toLetter), next_cursor: next < page.total ? String(next) : null };
    },
    retry: (id) => admin.queue.retryDead(id),
    discard: (id) => admin.queue.discardDead(id),
  };
}

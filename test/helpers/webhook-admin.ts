import type { WebhookAdmin, WebhookDeadLetter } from '../../src/http/admin-webhooks.js';

// The webhook queue's operator side, in memory: the shape the Redis webhook
// queue implements, for tests of the admin routes and the console.

export class ListWebhookAdmin implements WebhookAdmin {
  dead: WebhookDeadLetter[] = [];
  retried: string[] = [];
  async stats() {
    return {
      queued: 2,
      retrying: 1,
      dead: this.dead.length,
      receivers: [{ receiver: 'https://app.example/hooks', queued: 2, retrying: 1, dead: this.dead.length }],
    };
  }
  async listDead(cursor: string | undefined, limit: number) {
    const start = cursor === undefined ? 0 : this.dead.findIndex((d) => d.id === cursor) + 1;
    const items = this.dead.slice(start, start + limit);
    return { items, next_cursor: start + limit < this.dead.length ? items[items.length - 1]!.id : null };
  }
  async retry(id: string) {
    const i = this.dead.findIndex((d) => d.id === id);
    if (i < 0) return false;
    this.dead.splice(i, 1);
    this.retried.push(id);
    return true;
  }
  async discard(id: string) {
    const i = this.dead.findIndex((d) => d.id === id);
    if (i < 0) return false;
    this.dead.splice(i, 1);
    return true;
  }
}

/** `n` dead deliveries to one receiver, newest first. */
export function deadDeliveries(n: number): WebhookDeadLetter[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `w${i + 1}`,
    event: 'member_added',
    receiver: 'https://app.example/hooks',
    last_error: 'HTTP 502',
    attempts: 8,
    ts: Date.now() - (i + 1) * 1000,
  }));
}

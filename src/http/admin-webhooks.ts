import type { Logger } from 'pino';
import { Type } from 'typebox';
import { RelayError } from '../errors.js';
import type { Metrics } from '../metrics/index.js';
import { PageQuery, pageLimit } from './ingest-dead.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

// Operator routes over outbound webhook deliveries: queue depth per receiver
// and the dead letters, with retry and discard. They stand on `WebhookAdmin`,
// which the webhook queue implements; a relay without webhooks answers
// `configured: false` (lists) and not_found (actions).

export interface WebhookReceiverStats {
  /** The receiver's name or URL, as configured. */
  readonly receiver: string;
  readonly queued: number;
  readonly retrying: number;
  readonly dead: number;
}

export interface WebhookStats {
  /** Deliveries waiting for their first attempt. */
  readonly queued: number;
  /** Deliveries that failed and wait for their next attempt. */
  readonly retrying: number;
  /** Deliveries that used up their attempts. */
  readonly dead: number;
  readonly receivers: readonly WebhookReceiverStats[];
}

export interface WebhookDeadLetter {
  readonly id: string;
  /** The event delivered (`channel_occupied`, `member_added`, ...). */
  readonly event: string;
  readonly receiver: string;
  readonly last_error: string;
  readonly attempts: number;
  /** When it was dead-lettered, milliseconds since the epoch. */
  readonly ts: number;
}

/** What the webhook queue gives the admin routes (and the console). */
export interface WebhookAdmin {
  stats(): Promise<WebhookStats>;
  /** Newest first; `cursor` is the `next_cursor` of the previous page (undefined: first page). */
  listDead(
    cursor: string | undefined,
    limit: number,
  ): Promise<{ items: WebhookDeadLetter[]; next_cursor: string | null }>;
  /** Queues the delivery again (attempts start over); false when there is no such dead letter. */
  retry(id: string): Promise<boolean>;
  /** Deletes the dead letter; false when there is no such dead letter. */
  discard(id: string): Promise<boolean>;
}

const Count = Type.Integer({ minimum: 0 });
const StatsAnswer = Type.Object({
  configured: Type.Boolean(),
  queued: Count,
  retrying: Count,
  dead: Count,
  receivers: Type.Array(
    Type.Object({ receiver: Type.String(), queued: Count, retrying: Count, dead: Count }),
  ),
});
const DeadPage = Type.Object({
  configured: Type.Boolean(),
  items: Type.Array(
    Type.Object({
      id: Type.String(),
      event: Type.String(),
      receiver: Type.String(),
      last_error: Type.String(),
      attempts: Count,
      ts: Type.Integer(),
    }),
  ),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
});
const DeadId = Type.Object({ id: Type.String({ pattern: '^[0-9A-Za-z_.:-]{1,200}$' }) });
const ActionAnswer = Type.Object({
  id: Type.String(),
  action: Type.Union([Type.Literal('retry'), Type.Literal('discard')]),
});

/** Errors of the queue (Redis away) answer 503, never a 500. */
async function queueCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof RelayError) throw err;
    throw new RelayError('unavailable', `webhook queue: ${(err as Error).message}`, 1);
  }
}

export function registerWebhookAdminRoutes(
  app: HttpApp,
  deps: { readonly admin?: WebhookAdmin | undefined; readonly metrics: Metrics; readonly log: Logger },
): void {
  const { admin } = deps;
  const notConfigured = () => new RelayError('not_found', 'webhooks are not configured on this relay');

  app.get(
    '/v1/admin/webhooks',
    { config: { scope: 'admin' }, schema: { response: { 200: StatsAnswer, ...errorResponses } } },
    async () => {
      if (!admin) return { configured: false, queued: 0, retrying: 0, dead: 0, receivers: [] };
      const s = await queueCall(() => admin.stats());
      return { configured: true, ...s, receivers: [...s.receivers] };
    },
  );

  app.get(
    '/v1/admin/webhooks/dead',
    {
      config: { scope: 'admin' },
      schema: { querystring: PageQuery, response: { 200: DeadPage, ...errorResponses } },
    },
    async (request) => {
      if (!admin) return { configured: false, items: [], next_cursor: null };
      const page = await queueCall(() =>
        admin.listDead(request.query.cursor, pageLimit(request.query.limit)),
      );
      return { configured: true, items: [...page.items], next_cursor: page.next_cursor };
    },
  );

  const act = (action: 'retry' | 'discard') =>
    async function (this: unknown, request: { params: { id: string }; publisher?: { name: string } }) {
      if (!admin) throw notConfigured();
      const { id } = request.params;
      const ok = await queueCall(() => (action === 'retry' ? admin.retry(id) : admin.discard(id)));
      if (!ok)
        throw new RelayError('not_found', `no webhook dead letter ${id} (already retried or discarded?)`);
      deps.metrics.consoleActions.inc({ action, queue: 'webhooks' });
      deps.log.info(
        { key: request.publisher?.name, action, queue: 'webhooks', id },
        `webhook dead letter: ${action}`,
      );
      return { id, action };
    };

  app.post(
    '/v1/admin/webhooks/dead/:id/retry',
    {
      config: { scope: 'admin' },
      schema: { params: DeadId, response: { 200: ActionAnswer, ...errorResponses } },
    },
    act('retry'),
  );
  app.delete(
    '/v1/admin/webhooks/dead/:id',
    {
      config: { scope: 'admin' },
      schema: { params: DeadId, response: { 200: ActionAnswer, ...errorResponses } },
    },
    act('discard'),
  );
}

import { Type } from 'typebox';
import { RelayError } from '../errors.js';
import type { DeadLetter, WebhookAdmin } from '../webhooks/index.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

const DeadLetterSchema = Type.Object({
  id: Type.String(),
  /** The receiver's origin (never its full URL). */
  endpoint: Type.String(),
  /** The user's own channel or the channel the events are about. */
  key: Type.String(),
  ts: Type.Integer(),
  attempts: Type.Integer(),
  reason: Type.String(),
  /** The events as the receiver would have got them (the offline webhook's: its body). */
  events: Type.Array(Type.Unknown()),
});
/** Dead letters per page at most. */
const MAX_PAGE = 500;
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

/**
 * The webhook queues for operators (admin scope): depth per receiver, and
 * the dead letters, to list, send again or discard.
 */
export function registerWebhookRoutes(app: HttpApp, webhooks: WebhookAdmin | undefined): void {
  const label = (id: string) => webhooks?.endpoints.find((e) => e.id === id)?.label ?? id;
  const view = (d: DeadLetter) => ({
    id: d.id,
    endpoint: label(d.endpoint),
    key: d.key,
    ts: d.ts,
    attempts: d.attempts,
    reason: d.reason,
    events: d.items.map((i) => {
      const legacy = d.endpoint.startsWith('o');
      try {
        return JSON.parse(legacy ? i.json.slice(i.json.indexOf(' ') + 1) : i.json) as unknown;
      } catch {
        return i.json;
      }
    }),
  });
  const missing = (id: string) =>
    new RelayError('dead_letter_not_found', `no webhook dead letter ${JSON.stringify(id)}`);

  app.get(
    '/v1/webhooks',
    {
      config: { scope: 'admin' },
      schema: {
        response: {
          200: Type.Object({
            receivers: Type.Array(
              Type.Object({
                endpoint: Type.String(),
                /** The offline webhook (PUSHRELAY_OFFLINE_WEBHOOK) rather than a lifecycle receiver. */
                offline: Type.Boolean(),
                /** Users and channels with events waiting. */
                depth: Type.Integer(),
                /** Of those, the ones whose next event failed and waits for a retry. */
                retrying: Type.Integer(),
              }),
            ),
            queued_bytes: Type.Integer(),
            dead_letters: Type.Integer(),
          }),
          ...errorResponses,
        },
      },
    },
    async () => {
      if (!webhooks) return { receivers: [], queued_bytes: 0, dead_letters: 0 };
      const s = await unavailableOnError(webhooks.stats());
      return {
        receivers: webhooks.endpoints.map((e) => ({
          endpoint: e.label,
          offline: e.legacy,
          depth: s.endpoints[e.id]?.depth ?? 0,
          retrying: s.endpoints[e.id]?.retrying ?? 0,
        })),
        queued_bytes: s.bytes,
        dead_letters: s.deadLetters,
      };
    },
  );

  app.get(
    '/v1/webhooks/dead',
    {
      config: { scope: 'admin' },
      schema: {
        querystring: Type.Object(
          {
            offset: Type.Optional(Type.String({ pattern: '^\\d{1,9}$' })),
            limit: Type.Optional(Type.String({ pattern: '^\\d{1,3}$' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ total: Type.Integer(), items: Type.Array(DeadLetterSchema) }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      if (!webhooks) return { total: 0, items: [] };
      const offset = Number(request.query.offset ?? 0);
      const limit = Math.max(1, Math.min(Number(request.query.limit ?? 50), MAX_PAGE));
      const page = await unavailableOnError(webhooks.queue.deadLetters(offset, limit));
      return { total: page.total, items: page.items.map(view) };
    },
  );

  app.post(
    '/v1/webhooks/dead/:id/retry',
    {
      config: { scope: 'admin' },
      schema: {
        params: IdParams,
        response: { 200: Type.Object({ id: Type.String(), retried: Type.Boolean() }), ...errorResponses },
      },
    },
    async (request) => {
      const { id } = request.params;
      if (!webhooks || !(await unavailableOnError(webhooks.queue.retryDead(id)))) throw missing(id);
      return { id, retried: true };
    },
  );

  app.delete(
    '/v1/webhooks/dead/:id',
    {
      config: { scope: 'admin' },
      schema: {
        params: IdParams,
        response: { 200: Type.Object({ id: Type.String(), discarded: Type.Boolean() }), ...errorResponses },
      },
    },
    async (request) => {
      const { id } = request.params;
      if (!webhooks || !(await unavailableOnError(webhooks.queue.discardDead(id)))) throw missing(id);
      return { id, discarded: true };
    },
  );
}

async function unavailableOnError<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch {
    throw new RelayError('unavailable', undefined, 1);
  }
}

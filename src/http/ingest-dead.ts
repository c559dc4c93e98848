import type { Logger } from 'pino';
import { Type } from 'typebox';
import { RelayError } from '../errors.js';
import type { Metrics } from '../metrics/index.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

// The ingest stream's dead letters (`<prefix>:publish:dead`, written by the
// stream router and partition owners with fields reason, entry, body,
// source), for operators: listed newest first, paged by stream id; retried
// (the body is XADDed again to the stream it came from) or discarded.

export const StreamId = Type.String({
  pattern: '^[0-9]{1,20}-[0-9]{1,20}$',
  description: 'a Redis stream id',
});

export const PageQuery = Type.Object({
  cursor: Type.Optional(Type.String({ pattern: '^[0-9A-Za-z_.:-]{1,200}$' })),
  limit: Type.Optional(Type.String({ pattern: '^\\d{1,3}$', description: '1-100, default 20' })),
});

/** The page size asked for: 1-100, 20 when not given. */
export function pageLimit(raw: string | undefined): number {
  if (raw === undefined) return 20;
  const n = Number(raw);
  if (n < 1 || n > 100) throw new RelayError('bad_request', 'limit must be between 1 and 100');
  return n;
}

const DeadLetter = Type.Object({
  id: StreamId,
  /** When it was dead-lettered, milliseconds since the epoch. */
  ts: Type.Integer(),
  reason: Type.String({ description: 'the error code that refused it' }),
  /** The id of the refused entry in the ingest stream. */
  entry: Type.String(),
  source: Type.String({ description: 'stream (the publish stream) or anycable' }),
  /** The entry's body as refused, cut at 1 KiB. */
  body: Type.String(),
});

const DeadPage = Type.Object({
  /** False on a standalone node: the ingest stream needs Redis. */
  available: Type.Boolean(),
  /** Dead letters kept now. */
  total: Type.Integer(),
  items: Type.Array(DeadLetter),
  /** Pass as `cursor` for the next (older) page; null on the last one. */
  next_cursor: Type.Union([Type.String(), Type.Null()]),
});

const ActionAnswer = Type.Object({
  id: Type.String(),
  action: Type.Union([Type.Literal('retry'), Type.Literal('discard')]),
  /** retry: the id of the new entry in the ingest stream. */
  requeued_as: Type.Optional(Type.String()),
});

type Fields = string[];

function field(fields: Fields, name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

/** Any Redis failure answers 503, never a 500. */
/** A letter gone: retried or discarded by someone else, or never there. */
function gone(id: string): RelayError {
  return new RelayError('not_found', `no dead letter ${id} (already retried or discarded?)`);
}

/** The letter's fields, if it is still there. */
async function readLetter(command: Redis, stream: string, id: string): Promise<Fields | undefined> {
  const found = (await redisCall(() => command.xrange(stream, id, id))) as [string, Fields][];
  return found[0]?.[1];
}

/** Removes the letter; whoever removes it acts on it, so two operators at once act once. */
async function removeLetter(command: Redis, stream: string, id: string): Promise<void> {
  if ((await redisCall(() => command.xdel(stream, id))) === 0) throw gone(id);
}

async function redisCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof RelayError) throw err;
    throw new RelayError('unavailable', `Redis: ${(err as Error).message}`, 1);
  }
}

export interface IngestDeadDeps {
  /** Undefined on a standalone node. */
  readonly redis?: { readonly command: Redis; readonly names: RedisNames } | undefined;
  /** Where a retried entry goes, by its `source` field: the stream and the field holding the body. */
  readonly streams: Record<string, { readonly stream: string; readonly field: string }>;
  readonly metrics: Metrics;
  readonly log: Logger;
}

export function registerIngestDeadRoutes(app: HttpApp, deps: IngestDeadDeps): void {
  const noRedis = () =>
    new RelayError('not_found', 'the ingest stream and its dead letters need Redis (PUSHRELAY_REDIS_URL)');
  const done = (action: 'retry' | 'discard', keyName: string, letter: Record<string, unknown>) => {
    deps.metrics.consoleActions.inc({ action, queue: 'ingest' });
    deps.log.info({ key: keyName, action, queue: 'ingest', ...letter }, `ingest dead letter: ${action}`);
  };

  app.get(
    '/v1/admin/ingest/dead',
    {
      config: { scope: 'admin' },
      schema: { querystring: PageQuery, response: { 200: DeadPage, ...errorResponses } },
    },
    async (request) => {
      if (!deps.redis) return { available: false, total: 0, items: [], next_cursor: null };
      const { command, names } = deps.redis;
      const limit = pageLimit(request.query.limit);
      const cursor = request.query.cursor;
      if (cursor !== undefined && !/^[0-9]{1,20}-[0-9]{1,20}$/.test(cursor)) {
        throw new RelayError('bad_request', 'cursor must be the next_cursor of a previous page');
      }
      const [total, entries] = await redisCall(() =>
        Promise.all([
          command.xlen(names.ingestDead),
          command.xrevrange(
            names.ingestDead,
            cursor === undefined ? '+' : `(${cursor}`,
            '-',
            'COUNT',
            limit + 1,
          ) as Promise<[string, Fields][]>,
        ]),
      );
      const page = entries.slice(0, limit);
      return {
        available: true,
        total,
        items: page.map(([id, fields]) => ({
          id,
          ts: Number(id.slice(0, id.indexOf('-'))),
          reason: field(fields, 'reason') ?? '',
          entry: field(fields, 'entry') ?? '',
          source: field(fields, 'source') ?? 'stream',
          body: field(fields, 'body') ?? '',
        })),
        next_cursor: entries.length > limit ? page[page.length - 1]![0] : null,
      };
    },
  );

  app.post(
    '/v1/admin/ingest/dead/:id/retry',
    {
      config: { scope: 'admin' },
      schema: { params: Type.Object({ id: StreamId }), response: { 200: ActionAnswer, ...errorResponses } },
    },
    async (request) => {
      if (!deps.redis) throw noRedis();
      const { command, names } = deps.redis;
      const { id } = request.params;
      const fields = await readLetter(command, names.ingestDead, id);
      if (fields === undefined) throw gone(id);
      const source = field(fields, 'source') ?? 'stream';
      const target = deps.streams[source];
      if (target === undefined) {
        throw new RelayError(
          'not_found',
          `dead letters of source "${source}" cannot be retried on this node`,
        );
      }
      const body = field(fields, 'body') ?? '';
      // Whoever removes it re-queues it: two operators pressing retry at once queue it once.
      await removeLetter(command, names.ingestDead, id);
      let requeued: string | null;
      try {
        requeued = await command.xadd(target.stream, '*', target.field, body);
      } catch (err) {
        // Not re-queued: put it back (under a new id) rather than lose it.
        await command.xadd(names.ingestDead, '*', ...fields).catch(() => {});
        throw new RelayError('unavailable', `Redis: ${(err as Error).message}`, 1);
      }
      done('retry', request.publisher!.name, {
        id,
        reason: field(fields, 'reason'),
        entry: field(fields, 'entry'),
        requeuedAs: requeued,
      });
      return { id, action: 'retry' as const, requeued_as: requeued ?? '' };
    },
  );

  app.delete(
    '/v1/admin/ingest/dead/:id',
    {
      config: { scope: 'admin' },
      schema: { params: Type.Object({ id: StreamId }), response: { 200: ActionAnswer, ...errorResponses } },
    },
    async (request) => {
      if (!deps.redis) throw noRedis();
      const { command, names } = deps.redis;
      const { id } = request.params;
      const fields = (await readLetter(command, names.ingestDead, id)) ?? [];
      await removeLetter(command, names.ingestDead, id);
      done('discard', request.publisher!.name, {
        id,
        reason: field(fields, 'reason'),
        entry: field(fields, 'entry'),
      });
      return { id, action: 'discard' as const };
    },
  );
}

import { Type } from 'typebox';
import type { Broker } from '../broker/index.js';
import { RelayError } from '../errors.js';
import { BROADCAST_CHANNEL, decodePublication, isChannelName } from '../ingest/message.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

export const MAX_HISTORY_LIMIT = 1000;

export function registerHistoryRoutes(app: HttpApp, broker: Broker): void {
  app.get(
    '/v1/channels/:channel/history',
    {
      config: { scope: 'read' },
      schema: {
        params: Type.Object({ channel: Type.String() }),
        querystring: Type.Object(
          {
            since: Type.Optional(Type.String({ pattern: '^\\d{1,15}$' })),
            limit: Type.Optional(Type.String({ pattern: '^\\d{1,4}$' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            channel: Type.String(),
            epoch: Type.String(),
            offset: Type.Integer(),
            complete: Type.Boolean(),
            messages: Type.Array(
              Type.Object({
                id: Type.String(),
                event: Type.String(),
                data: Type.Unknown(),
                offset: Type.Integer(),
                ts: Type.Integer(),
              }),
            ),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { channel } = request.params;
      if (channel !== BROADCAST_CHANNEL && !isChannelName(channel)) {
        throw new RelayError('invalid_channel', `invalid channel name ${JSON.stringify(channel)}`);
      }
      const since = Number(request.query.since ?? 0);
      const limit = Math.min(Number(request.query.limit ?? 100), MAX_HISTORY_LIMIT);
      if (limit < 1) throw new RelayError('invalid_body', `limit must be between 1 and ${MAX_HISTORY_LIMIT}`);
      const res = await broker.history(channel, since, limit);
      return {
        channel,
        epoch: res.epoch,
        offset: res.offset,
        complete: res.complete,
        // An entry that is not a publication (written to Redis by something else) is left out.
        messages: res.entries.flatMap((e) => {
          let m: ReturnType<typeof decodePublication>;
          try {
            m = decodePublication(e.text);
          } catch {
            return [];
          }
          return [{ id: m.id, event: m.event, data: m.data, offset: e.offset, ts: m.ts }];
        }),
      };
    },
  );
}

import { Type } from 'typebox';
import { assertClientChannel, assertUserId, userChannel } from '../ingest/message.js';
import { infoValue, type Presence } from '../presence/index.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

export function registerPresenceRoutes(app: HttpApp, presence: Presence): void {
  app.get(
    '/v1/users/:id/presence',
    {
      config: { scope: 'read' },
      schema: {
        params: Type.Object({ id: Type.String() }),
        response: {
          200: Type.Object({ user: Type.String(), online: Type.Boolean(), sockets: Type.Integer() }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { id } = request.params;
      assertUserId(id);
      const [sockets = 0] = await presence.count([userChannel(id)]);
      return { user: id, online: sockets > 0, sockets };
    },
  );

  app.get(
    '/v1/channels/:channel/presence',
    {
      config: { scope: 'read' },
      schema: {
        params: Type.Object({ channel: Type.String() }),
        response: {
          200: Type.Object({
            channel: Type.String(),
            sockets: Type.Integer(),
            users: Type.Array(
              Type.Object({
                id: Type.String(),
                sockets: Type.Integer(),
                /** The member's `user_info` (the token's claim, or Laravel Echo's `channel_data`), when it has one. */
                user_info: Type.Optional(Type.Unknown()),
              }),
            ),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { channel } = request.params;
      assertClientChannel(channel);
      const members = await presence.members(channel);
      let sockets = 0;
      const users = members.map((m) => {
        sockets += m.sockets;
        const info = infoValue(m.info);
        return info === undefined
          ? { id: m.user, sockets: m.sockets }
          : { id: m.user, sockets: m.sockets, user_info: info };
      });
      return { channel, sockets, users };
    },
  );
}

import { Type } from 'typebox';
import { assertClientChannel, assertUserId, userChannel } from '../ingest/message.js';
import type { Presence } from '../presence/index.js';
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
            users: Type.Array(Type.Object({ id: Type.String(), sockets: Type.Integer() })),
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
      const users = [...members].map(([id, n]) => {
        sockets += n;
        return { id, sockets: n };
      });
      users.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      return { channel, sockets, users };
    },
  );
}

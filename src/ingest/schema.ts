import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { type Static, Type } from 'typebox';
import { RelayError } from '../errors.js';

// The publish body, as JSON Schema. HTTP routes declare it, and the Redis
// ingest validates against it with the same Ajv instance, so both paths
// accept and refuse exactly the same messages.

export const PUBLISH_ID_PATTERN = '^[A-Za-z0-9_.:@=+-]{1,128}$';
export const MAX_USERS_PER_PUBLISH = 10_000;
export const MAX_CHANNELS_PER_PUBLISH = 1_000;

export const PublishBody = Type.Object(
  {
    event: Type.String({ description: 'event name the client listens for' }),
    data: Type.Optional(
      Type.Unknown({ description: 'any JSON value; the first argument of the client handler' }),
    ),
    users: Type.Optional(Type.Array(Type.String(), { maxItems: MAX_USERS_PER_PUBLISH })),
    channels: Type.Optional(Type.Array(Type.String(), { maxItems: MAX_CHANNELS_PER_PUBLISH })),
    broadcast: Type.Optional(Type.Boolean()),
    except_users: Type.Optional(Type.Array(Type.String(), { maxItems: MAX_USERS_PER_PUBLISH })),
    id: Type.Optional(Type.String({ pattern: PUBLISH_ID_PATTERN, description: 'idempotency id' })),
  },
  { additionalProperties: false },
);
export type PublishBody = Static<typeof PublishBody>;

export const MAX_BATCH = 1_000;
export const BatchBody = Type.Object(
  { messages: Type.Array(PublishBody, { minItems: 1, maxItems: MAX_BATCH }) },
  { additionalProperties: false },
);
export type BatchBody = Static<typeof BatchBody>;

/**
 * The one Ajv of the relay. No coercion, no silent removal of unknown
 * properties: a field the relay does not know is an error the publisher sees.
 */
export const ajv = new Ajv({
  allErrors: false,
  coerceTypes: false,
  removeAdditional: false,
  useDefaults: false,
  strict: false,
});

export function compile<T>(schema: object): ValidateFunction<T> {
  return ajv.compile<T>(schema);
}

/** Ajv's first error, as a sentence a publisher can act on. */
export function describeAjvError(errors: readonly ErrorObject[] | null | undefined, root = 'body'): string {
  const e = errors?.[0];
  if (!e) return 'the body does not match the schema';
  const where = `${root}${e.instancePath.replace(/\//g, '.')}`;
  if (e.keyword === 'additionalProperties') {
    return `${where} has an unknown field "${String(e.params.additionalProperty)}"`;
  }
  if (e.keyword === 'required') return `${where} is missing the field "${String(e.params.missingProperty)}"`;
  if (e.keyword === 'pattern' && e.instancePath.endsWith('/id')) {
    return `${where} must be 1-128 characters of A-Z a-z 0-9 _ . : @ = + -`;
  }
  return `${where} ${e.message ?? 'is invalid'}`;
}

const validatePublish = compile<PublishBody>(PublishBody);

/** For paths Fastify does not validate (Redis ingest, client events). */
export function parsePublishBody(value: unknown): PublishBody {
  if (!validatePublish(value)) throw new RelayError('invalid_body', describeAjvError(validatePublish.errors));
  return value;
}

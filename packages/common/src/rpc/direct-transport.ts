import { clone, create, type DescService, type DescMessage, type DescMethod, type DescMethodStreaming, type DescMethodUnary, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  createServiceImplSpec,
  type ConnectRouter,
  type ContextValues,
  type MethodImplSpec,
  type ServiceImpl,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from '@connectrpc/connect';
import { toConnectError } from '../errors/connect.js';
import type { Routes } from './transport.js';

/** Request headers as Connect's Transport takes them (lib.dom's HeadersInit, not in this package's types). */
type HeadersInit = ConstructorParameters<typeof Headers>[0];

/**
 * An in-process transport that calls the routes' implementations directly:
 * no encoding, no envelopes, no copies of `bytes` fields. The all-in-one
 * daemon uses it between its tiers, where the router transport serialized
 * every chunk of an export or a context transfer twice per hop.
 *
 * Errors cross it as they cross the wire (a ConnectError carrying the
 * KilnError, which `createKilnClient` turns back). Unary messages are
 * cloned, so neither side sees the other's later mutations; streamed
 * messages are passed as they are (producers never reuse a yielded buffer).
 * Aborting the client's signal aborts the handler's and ends the call with
 * `canceled`; a client that stops reading a stream early aborts the handler.
 */
export function createDirectTransport(routes: Routes): Transport {
  const methods = new Map<string, MethodImplSpec>();
  const router = {
    service(service: DescService, impl: Partial<ServiceImpl<DescService>>) {
      const spec = createServiceImplSpec(service, impl);
      for (const m of Object.values(spec.methods)) methods.set(key(m.method), m);
      return router;
    },
    rpc() {
      throw new Error('createDirectTransport: register whole services with router.service');
    },
    handlers: [],
  } as unknown as ConnectRouter;
  routes(router);

  const find = (method: DescMethod): MethodImplSpec => {
    const spec = methods.get(key(method));
    if (!spec) throw new ConnectError(`${method.parent.typeName}.${method.name} is not implemented`, Code.Unimplemented);
    return spec;
  };
  const context = (method: DescMethod, signal: AbortSignal | undefined, timeoutMs: number | undefined, header: HeadersInit | undefined, values: ContextValues | undefined) =>
    createHandlerContext({
      service: method.parent,
      method,
      protocolName: 'direct',
      requestMethod: 'POST',
      url: `/${method.parent.typeName}/${method.name}`,
      timeoutMs,
      requestSignal: signal,
      requestHeader: header,
      contextValues: values ?? createContextValues(),
    });

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      if (signal?.aborted) throw canceled(signal);
      const ctx = context(method, signal, timeoutMs, header, contextValues);
      try {
        const spec = find(method);
        if (spec.kind !== 'unary') throw new ConnectError(`${method.name} is not a unary method`, Code.Internal);
        const out = await abortable(Promise.resolve(spec.impl(clone(method.input, create(method.input, input)) as never, ctx)), signal);
        return { stream: false, service: method.parent, method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message: clone(method.output, create(method.output, out as MessageInitShape<O>)) };
      } catch (err) {
        throw toConnectError(err);
      } finally {
        ctx.abort(CALL_ENDED);
      }
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      if (signal?.aborted) throw canceled(signal);
      const spec = find(method);
      const ctx = context(method, signal, timeoutMs, header, contextValues);
      const requests = (async function* () {
        for await (const m of input) yield create(method.input, m);
      })();
      async function* responses(): AsyncGenerator<MessageInitShape<O>> {
        switch (spec.kind) {
          case 'server_streaming': {
            const first = await requests.next();
            if (first.done) throw new ConnectError('server streaming call without its request', Code.InvalidArgument);
            yield* spec.impl(first.value as never, ctx) as AsyncIterable<MessageInitShape<O>>;
            return;
          }
          case 'client_streaming':
            yield (await spec.impl(requests as never, ctx)) as MessageInitShape<O>;
            return;
          case 'bidi_streaming':
            yield* spec.impl(requests as never, ctx) as AsyncIterable<MessageInitShape<O>>;
            return;
          default:
            throw new ConnectError(`${method.name} is not a streaming method`, Code.Internal);
        }
      }
      async function* guarded(): AsyncGenerator<MessageShape<O>> {
        const it = responses();
        let finished = false;
        // Connect's client aborts its signal when the caller stops reading: end the handler then too.
        const onAbort = () => void it.return(undefined).catch(() => undefined);
        signal?.addEventListener('abort', onAbort, { once: true });
        try {
          for (;;) {
            const r = await abortable(it.next(), signal);
            if (r.done) {
              finished = true;
              return;
            }
            yield create(method.output, r.value);
          }
        } catch (err) {
          throw toConnectError(err);
        } finally {
          signal?.removeEventListener('abort', onAbort);
          // An early stop (or an abort) ends the handler: its signal fires, its generator returns.
          if (!finished) {
            ctx.abort(new ConnectError('the client ended the call', Code.Canceled));
            void it.return(undefined).catch(() => undefined);
          } else ctx.abort(CALL_ENDED);
        }
      }
      return { stream: true, service: method.parent, method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message: guarded() };
    },
  };
}

/**
 * The reason a handler's signal aborts with once its call ended normally:
 * made once, as Node's default reason is a new DOMException per abort,
 * which captures a stack (~2% of the all-in-one daemon's main thread under
 * 20 concurrent builds, ~45 calls per build). Same name and message.
 */
const CALL_ENDED = new DOMException('This operation was aborted', 'AbortError');

function key(method: DescMethod): string {
  return `${method.parent.typeName}/${method.name}`;
}

function canceled(signal: AbortSignal): ConnectError {
  return signal.reason instanceof ConnectError ? signal.reason : new ConnectError('the operation was aborted', Code.Canceled, undefined, undefined, signal.reason);
}

/** `p`, or a `canceled` rejection as soon as `signal` aborts. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(canceled(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(canceled(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

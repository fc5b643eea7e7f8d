/**
 * Jupyter widgets inside an output frame. The frame is one more frontend of the kernel's
 * widgets, like a second browser tab: it asks the kernel for each model's state, keeps its
 * models in step with the kernel's messages the page forwards, and sends its own changes (a
 * slider moved) back through the page, which passes them to this notebook's kernel and nowhere
 * else.
 */
import type { IClassicComm } from '@jupyter-widgets/base';
import { put_buffers, WidgetModel } from '@jupyter-widgets/base';
import { HTMLManager } from '@jupyter-widgets/html-manager';
import '@jupyter-widgets/controls/css/widgets.css';

/** A kernel message as the page forwards it (comm_open, comm_msg, comm_close). */
interface IKernelMessage {
  header: { msg_id: string; msg_type: string };
  parent_header: { msg_id?: string };
  content: { comm_id?: string; data?: { method?: string; state?: object; buffer_paths?: string[][] } };
  metadata: object;
  buffers?: (ArrayBuffer | ArrayBufferView)[];
}

type Handler = (msg: IKernelMessage) => void;

function newId(): string {
  return crypto.randomUUID().replace(/-/g, '');
}

/** A model's comm: sends go to the page, receives come from the page's forwarding. */
class FrameComm implements IClassicComm {
  constructor(
    readonly comm_id: string,
    readonly target_name = 'jupyter.widget'
  ) {}

  open(): string {
    return ''; // models here are the kernel's; the frame never opens one
  }

  send(data: unknown, _callbacks?: unknown, metadata?: unknown, buffers?: unknown[]): string {
    const msgId = newId();
    window.top?.postMessage(
      { hopx: 'comm-send', comm_id: this.comm_id, msg_id: msgId, data, metadata, buffers },
      '*'
    );
    return msgId;
  }

  close(): string {
    this._onClose?.({} as IKernelMessage);
    return '';
  }

  on_msg(callback: Handler): void {
    this._onMsg = callback;
  }

  on_close(callback: Handler): void {
    this._onClose = callback;
  }

  receive(msg: IKernelMessage): void {
    if (msg.header.msg_type === 'comm_close') {
      this._onClose?.(msg);
    } else {
      this._onMsg?.(msg);
    }
  }

  private _onMsg: Handler | null = null;
  private _onClose: Handler | null = null;
}

class FrameWidgetManager extends HTMLManager {
  constructor() {
    super();
    window.addEventListener('message', event => {
      const data = event.data as { hopx?: string; msg?: IKernelMessage } | null;
      if (event.source === window.top && data?.hopx === 'kernel' && data.msg) {
        this._receive(data.msg);
      }
    });
  }

  /** A model this frame has not seen yet is asked of the kernel (its `request_state`). */
  async get_model(modelId: string): Promise<WidgetModel> {
    if (!this.has_model(modelId)) {
      const comm = new FrameComm(modelId);
      this._comms.set(modelId, comm);
      const state = new Promise<IKernelMessage>(resolve => this._waiting.set(modelId, resolve));
      this.register_model(
        modelId,
        state.then(msg => {
          const data = msg.content.data ?? {};
          const serialized = { ...(data.state ?? {}) } as Record<string, unknown>;
          put_buffers(
            serialized as Parameters<typeof put_buffers>[0],
            data.buffer_paths ?? [],
            (msg.buffers ?? []) as DataView[]
          );
          return this._make_model(
            {
              model_id: modelId,
              model_name: serialized._model_name as string,
              model_module: serialized._model_module as string,
              model_module_version: serialized._model_module_version as string,
              comm
            },
            serialized
          );
        })
      );
      comm.send({ method: 'request_state' });
    }
    return super.get_model(modelId);
  }

  private _receive(msg: IKernelMessage): void {
    const commId = msg.content.comm_id;
    if (!commId) {
      return;
    }
    const waiting = this._waiting.get(commId);
    const method = msg.content.data?.method;
    if (waiting && (method === 'update' || method === 'echo_update') && msg.content.data?.state) {
      const state = msg.content.data.state as { _model_name?: string };
      if (state._model_name) {
        this._waiting.delete(commId);
        waiting(msg);
        return;
      }
    }
    this._comms.get(commId)?.receive(msg);
  }

  private _comms = new Map<string, FrameComm>();
  private _waiting = new Map<string, (msg: IKernelMessage) => void>();
}

/** Renders the widget view `data` describes into `root`. */
async function renderWidget(root: HTMLElement, data: { model_id?: string }): Promise<void> {
  if (!data.model_id) {
    throw new Error('no widget model');
  }
  const manager = (window as unknown as { hopxWidgetManager?: FrameWidgetManager });
  manager.hopxWidgetManager ??= new FrameWidgetManager();
  const model = await manager.hopxWidgetManager.get_model(data.model_id);
  const view = manager.hopxWidgetManager.create_view(model);
  await manager.hopxWidgetManager.display_view(view, root);
}

(window as unknown as { hopxRenderWidget: typeof renderWidget }).hopxRenderWidget = renderWidget;

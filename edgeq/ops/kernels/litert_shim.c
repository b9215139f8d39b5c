/* Run a .tflite with edgeq's ternary custom ops through LiteRT's stable C API (libLiteRt.so).
 *
 * libLiteRt.so (shipped in the ai-edge-litert wheel, x86_64 and aarch64) is dlopen'ed at run time,
 * so this library has no link-time dependency on it and its core kernels stay usable without it.
 * The wheel ships no headers: the few types below are declared here from LiteRT's litert/c headers,
 * checked against the 2.3.0 binary (LiteRtGetTensorBufferTensorType copies 72 bytes: the
 * LiteRtLayout with a 7-bit rank, a has_strides bit, 8 dimensions and 8 strides).
 *
 * Flow: LiteRtCreateEnvironment → LiteRtCreateModelFromFile → LiteRtCreateOptions +
 * LiteRtSetOptionsHardwareAccelerators(CPU) + LiteRtAddCustomOpKernelOption(EDGEQ_TERNARY_FC,
 * EDGEQ_TERNARY_CONV2D) → LiteRtCreateCompiledModel → managed host tensor buffers →
 * LiteRtRunCompiledModel.
 *
 * LiteRT's custom-op API shares one user_data among all nodes of an op and ignores the status
 * returned by Init/GetOutputLayouts/Run, so the kernels record errors in their context, which
 * edgeq_lrt_invoke() checks after every run. A node has no state of its own either: each op
 * context (one per op and session) keeps the ops it prepared (edgeq_ternary_prepare), found by
 * the address and size of the node's constant weights and qparams. Those buffers belong to the
 * compiled model and do not move or change while it lives; a prepared op is still checked
 * against the buffers' first and last bytes before it runs, and made again if they differ.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ternary.h"

typedef int LiteRtStatus; /* kLiteRtStatusOk == 0 */
typedef void* LiteRtEnvironment;
typedef void* LiteRtModel;
typedef void* LiteRtOptions;
typedef void* LiteRtCompiledModel;
typedef void* LiteRtSubgraph;
typedef void* LiteRtTensor;
typedef void* LiteRtTensorBuffer;
typedef void* LiteRtTensorBufferRequirements;
typedef size_t LiteRtParamIndex;

#define LRT_MAX_RANK 8
typedef struct {
  uint32_t rank_bits; /* unsigned rank : 7; bool has_strides : 1; */
  int32_t dimensions[LRT_MAX_RANK];
  uint32_t strides[LRT_MAX_RANK];
} LiteRtLayout;

typedef struct {
  int32_t element_type; /* LiteRtElementType == TfLiteType */
  LiteRtLayout layout;
} LiteRtRankedTensorType;

_Static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout ABI");
_Static_assert(sizeof(LiteRtRankedTensorType) == 72, "LiteRtRankedTensorType ABI");

typedef struct {
  LiteRtStatus (*Init)(void* user_data, const void* init_data, size_t init_data_size);
  LiteRtStatus (*GetOutputLayouts)(void* user_data, size_t num_inputs,
                                   const LiteRtLayout* input_layouts, size_t num_outputs,
                                   LiteRtLayout* output_layouts);
  LiteRtStatus (*Run)(void* user_data, size_t num_inputs, const LiteRtTensorBuffer* inputs,
                      size_t num_outputs, LiteRtTensorBuffer* outputs);
  LiteRtStatus (*Destroy)(void* user_data);
} LiteRtCustomOpKernel;

enum { kElemFloat32 = 1, kElemInt32 = 2, kElemUInt8 = 3, kElemInt64 = 4, kElemBool = 6,
       kElemInt16 = 7, kElemInt8 = 9, kElemFloat16 = 10, kElemFloat64 = 11 };
enum { kLockRead = 0, kLockWrite = 1 };
enum { kHwCpu = 1 };
enum { kOpCodeCustom = 32 }; /* LiteRtOpCode mirrors TFLite's BuiltinOperator */
enum { kStatusInvalidArgument = 1, kStatusRuntimeFailure = 3 };

/* ------------------------------------------------------------------------------------------ */
/* The C API table, filled by dlsym.                                                          */

static struct {
  void* handle;
  LiteRtStatus (*CreateEnvironment)(int, const void*, LiteRtEnvironment*);
  void (*DestroyEnvironment)(LiteRtEnvironment);
  /* 2.3.0: LiteRtCreateModelFromFile(LiteRtEnvironment, const char*, LiteRtModel*). */
  LiteRtStatus (*CreateModelFromFile)(LiteRtEnvironment, const char*, LiteRtModel*);
  void (*DestroyModel)(LiteRtModel);
  LiteRtStatus (*CreateOptions)(LiteRtOptions*);
  void (*DestroyOptions)(LiteRtOptions);
  LiteRtStatus (*SetOptionsHardwareAccelerators)(LiteRtOptions, int);
  LiteRtStatus (*AddCustomOpKernelOption)(LiteRtOptions, const char*, int,
                                          const LiteRtCustomOpKernel*, void*);
  LiteRtStatus (*CreateCompiledModel)(LiteRtEnvironment, LiteRtModel, LiteRtOptions,
                                      LiteRtCompiledModel*);
  void (*DestroyCompiledModel)(LiteRtCompiledModel);
  LiteRtStatus (*GetModelSubgraph)(LiteRtModel, LiteRtParamIndex, LiteRtSubgraph*);
  LiteRtStatus (*GetNumSubgraphInputs)(LiteRtSubgraph, LiteRtParamIndex*);
  LiteRtStatus (*GetNumSubgraphOutputs)(LiteRtSubgraph, LiteRtParamIndex*);
  LiteRtStatus (*GetSubgraphInput)(LiteRtSubgraph, LiteRtParamIndex, LiteRtTensor*);
  LiteRtStatus (*GetSubgraphOutput)(LiteRtSubgraph, LiteRtParamIndex, LiteRtTensor*);
  LiteRtStatus (*GetRankedTensorType)(LiteRtTensor, LiteRtRankedTensorType*);
  LiteRtStatus (*GetNumSubgraphOps)(LiteRtSubgraph, LiteRtParamIndex*);
  LiteRtStatus (*GetSubgraphOp)(LiteRtSubgraph, LiteRtParamIndex, void**);
  LiteRtStatus (*GetOpCode)(void*, int*);
  LiteRtStatus (*GetCustomCode)(void*, const char**);
  LiteRtStatus (*GetInputReqs)(LiteRtCompiledModel, LiteRtParamIndex, LiteRtParamIndex,
                               LiteRtTensorBufferRequirements*);
  LiteRtStatus (*GetOutputReqs)(LiteRtCompiledModel, LiteRtParamIndex, LiteRtParamIndex,
                                LiteRtTensorBufferRequirements*);
  LiteRtStatus (*ReqsBufferSize)(LiteRtTensorBufferRequirements, size_t*);
  LiteRtStatus (*ReqsBufferType)(LiteRtTensorBufferRequirements, int, int*);
  LiteRtStatus (*CreateManagedTensorBuffer)(LiteRtEnvironment, int, const LiteRtRankedTensorType*,
                                            size_t, LiteRtTensorBuffer*);
  void (*DestroyTensorBuffer)(LiteRtTensorBuffer);
  LiteRtStatus (*GetTensorBufferTensorType)(LiteRtTensorBuffer, LiteRtRankedTensorType*);
  LiteRtStatus (*LockTensorBuffer)(LiteRtTensorBuffer, void**, int);
  LiteRtStatus (*UnlockTensorBuffer)(LiteRtTensorBuffer);
  LiteRtStatus (*RunCompiledModel)(LiteRtCompiledModel, LiteRtParamIndex, size_t,
                                   LiteRtTensorBuffer*, size_t, LiteRtTensorBuffer*);
} api;

static void set_err(char* err, size_t errlen, const char* fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

#define SYM(field, name)                                                              \
  do {                                                                                \
    *(void**)(&api.field) = dlsym(h, name);                                           \
    if (!api.field) {                                                                 \
      set_err(err, errlen, "%s does not export %s (needs ai-edge-litert >= 2.1)", path, name); \
      dlclose(h);                                                                     \
      memset(&api, 0, sizeof(api));                                                   \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

/* Load libLiteRt.so from `path` (once per process). */
int edgeq_lrt_load(const char* path, char* err, size_t errlen) {
  if (api.handle) return 0;
  void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    set_err(err, errlen, "cannot load %s: %s", path, dlerror());
    return 1;
  }
  SYM(CreateEnvironment, "LiteRtCreateEnvironment");
  SYM(DestroyEnvironment, "LiteRtDestroyEnvironment");
  SYM(CreateModelFromFile, "LiteRtCreateModelFromFile");
  SYM(DestroyModel, "LiteRtDestroyModel");
  SYM(CreateOptions, "LiteRtCreateOptions");
  SYM(DestroyOptions, "LiteRtDestroyOptions");
  SYM(SetOptionsHardwareAccelerators, "LiteRtSetOptionsHardwareAccelerators");
  SYM(AddCustomOpKernelOption, "LiteRtAddCustomOpKernelOption");
  SYM(CreateCompiledModel, "LiteRtCreateCompiledModel");
  SYM(DestroyCompiledModel, "LiteRtDestroyCompiledModel");
  SYM(GetModelSubgraph, "LiteRtGetModelSubgraph");
  SYM(GetNumSubgraphInputs, "LiteRtGetNumSubgraphInputs");
  SYM(GetNumSubgraphOutputs, "LiteRtGetNumSubgraphOutputs");
  SYM(GetSubgraphInput, "LiteRtGetSubgraphInput");
  SYM(GetSubgraphOutput, "LiteRtGetSubgraphOutput");
  SYM(GetRankedTensorType, "LiteRtGetRankedTensorType");
  SYM(GetNumSubgraphOps, "LiteRtGetNumSubgraphOps");
  SYM(GetSubgraphOp, "LiteRtGetSubgraphOp");
  SYM(GetOpCode, "LiteRtGetOpCode");
  SYM(GetCustomCode, "LiteRtGetCustomCode");
  SYM(GetInputReqs, "LiteRtGetCompiledModelInputBufferRequirements");
  SYM(GetOutputReqs, "LiteRtGetCompiledModelOutputBufferRequirements");
  SYM(ReqsBufferSize, "LiteRtGetTensorBufferRequirementsBufferSize");
  SYM(ReqsBufferType, "LiteRtGetTensorBufferRequirementsSupportedTensorBufferType");
  SYM(CreateManagedTensorBuffer, "LiteRtCreateManagedTensorBuffer");
  SYM(DestroyTensorBuffer, "LiteRtDestroyTensorBuffer");
  SYM(GetTensorBufferTensorType, "LiteRtGetTensorBufferTensorType");
  SYM(LockTensorBuffer, "LiteRtLockTensorBuffer");
  SYM(UnlockTensorBuffer, "LiteRtUnlockTensorBuffer");
  SYM(RunCompiledModel, "LiteRtRunCompiledModel");
  api.handle = h;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The custom-op kernels.                                                                    */

typedef struct {
  int kind;
  const char* name;
  int nodes;       /* Init calls minus Destroy calls */
  int64_t runs;    /* Run calls */
  int64_t prepares; /* edgeq_ternary_prepare calls */
  char err[512];   /* first error since the last check; "" if none */
  struct prepared_node {
    const void *w, *q;
    int64_t w_bytes, q_words;
    edgeq_ternary_prepared* op;
  } * prep;        /* n_prep of cap_prep (the node count at the first run) entries */
  int n_prep, cap_prep;
} op_ctx;

/* The prepared op for a node's weights and qparams: made on the node's first run, reused after. */
static edgeq_ternary_prepared* prepared_for(op_ctx* c, const void* w, int64_t w_bytes, const void* q,
                                           int64_t q_words, char* msg, size_t msglen) {
  for (int i = 0; i < c->n_prep; ++i) {
    struct prepared_node* e = &c->prep[i];
    if (e->w == w && e->q == q && e->w_bytes == w_bytes && e->q_words == q_words) {
      if (edgeq_ternary_prepared_from(e->op, (const int32_t*)q, q_words, (const uint8_t*)w, w_bytes))
        return e->op;
      edgeq_ternary_release(e->op); /* the buffers changed: prepare again */
      *e = c->prep[--c->n_prep];
      break;
    }
  }
  edgeq_ternary_prepared* op = NULL;
  if (edgeq_ternary_prepare((const int32_t*)q, q_words, (const uint8_t*)w, w_bytes, &op, msg, msglen))
    return NULL;
  c->prepares++;
  if (!c->prep) {
    c->cap_prep = c->nodes > 0 ? c->nodes : 1;
    c->prep = (struct prepared_node*)calloc((size_t)c->cap_prep, sizeof(*c->prep));
  }
  if (!c->prep) {
    edgeq_ternary_release(op);
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  if (c->n_prep >= c->cap_prep) { /* more buffers than nodes: drop the oldest */
    edgeq_ternary_release(c->prep[0].op);
    memmove(c->prep, c->prep + 1, sizeof(*c->prep) * (size_t)(c->n_prep - 1));
    c->n_prep--;
  }
  c->prep[c->n_prep++] = (struct prepared_node){w, q, w_bytes, q_words, op};
  return op;
}

static void prepared_clear(op_ctx* c) {
  for (int i = 0; i < c->n_prep; ++i) edgeq_ternary_release(c->prep[i].op);
  free(c->prep);
  c->prep = NULL;
  c->n_prep = c->cap_prep = 0;
}

static void ctx_fail(op_ctx* c, const char* fmt, ...) {
  if (c->err[0]) return; /* keep the first error */
  int n = snprintf(c->err, sizeof(c->err), "%s: ", c->name);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err + n, sizeof(c->err) - (size_t)n, fmt, ap);
  va_end(ap);
}

static LiteRtStatus k_init(void* ud, const void* data, size_t size) {
  op_ctx* c = (op_ctx*)ud;
  c->nodes++;
  /* The custom options are a copy of the 80-byte header: check it is one this library reads. */
  if (size < 4 * EDGEQ_TERNARY_HEADER_WORDS || !data) {
    ctx_fail(c, "node has %zu bytes of custom options, expected %d", size,
             4 * EDGEQ_TERNARY_HEADER_WORDS);
    return kStatusInvalidArgument;
  }
  int32_t h[EDGEQ_TERNARY_HEADER_WORDS];
  memcpy(h, data, sizeof(h));
  if ((uint32_t)h[0] != EDGEQ_TERNARY_MAGIC || h[1] != EDGEQ_TERNARY_FORMAT_VERSION ||
      h[2] != c->kind) {
    ctx_fail(c, "node header (magic %08x, version %d, kind %d) is not one this kernel reads "
             "(version %d, kind %d)", (unsigned)h[0], h[1], h[2], EDGEQ_TERNARY_FORMAT_VERSION,
             c->kind);
    return kStatusInvalidArgument;
  }
  return 0;
}

static LiteRtStatus k_layouts(void* ud, size_t n_in, const LiteRtLayout* in, size_t n_out,
                              LiteRtLayout* out) {
  op_ctx* c = (op_ctx*)ud;
  if (n_in != 3 || n_out != 1) {
    ctx_fail(c, "expected 3 inputs and 1 output, got %zu and %zu", n_in, n_out);
    return kStatusInvalidArgument;
  }
  int32_t dims[EDGEQ_TERNARY_MAX_RANK];
  int rank = 0;
  char msg[256];
  if (edgeq_ternary_infer_shape(c->kind, in[0].dimensions, (int)(in[0].rank_bits & 0x7F),
                                in[1].dimensions, (int)(in[1].rank_bits & 0x7F), in[2].dimensions,
                                (int)(in[2].rank_bits & 0x7F), dims, &rank, msg, sizeof(msg))) {
    ctx_fail(c, "%s", msg);
    return kStatusInvalidArgument;
  }
  memset(&out[0], 0, sizeof(LiteRtLayout));
  out[0].rank_bits = (uint32_t)rank;
  memcpy(out[0].dimensions, dims, sizeof(int32_t) * (size_t)rank);
  return 0;
}

static int64_t numel(const LiteRtLayout* l) {
  int64_t n = 1;
  for (unsigned i = 0; i < (l->rank_bits & 0x7F); ++i) n *= l->dimensions[i];
  return n;
}

static LiteRtStatus k_run(void* ud, size_t n_in, const LiteRtTensorBuffer* ins, size_t n_out,
                          LiteRtTensorBuffer* outs) {
  op_ctx* c = (op_ctx*)ud;
  c->runs++;
  if (n_in != 3 || n_out != 1) {
    ctx_fail(c, "expected 3 inputs and 1 output, got %zu and %zu", n_in, n_out);
    return kStatusInvalidArgument;
  }
  static const int want[4] = {kElemInt8, kElemUInt8, kElemInt32, kElemInt8};
  static const char* what[4] = {"input", "packed weights", "qparams", "output"};
  LiteRtTensorBuffer bufs[4] = {ins[0], ins[1], ins[2], outs[0]};
  LiteRtRankedTensorType types[4];
  void* ptr[4] = {0, 0, 0, 0};
  int locked = 0;
  LiteRtStatus status = 0;
  for (; locked < 4; ++locked) {
    if (api.GetTensorBufferTensorType(bufs[locked], &types[locked]) ||
        api.LockTensorBuffer(bufs[locked], &ptr[locked], locked == 3 ? kLockWrite : kLockRead)) {
      ctx_fail(c, "cannot access the %s tensor buffer", what[locked]);
      status = kStatusRuntimeFailure;
      break;
    }
    if (types[locked].element_type != want[locked]) {
      ctx_fail(c, "%s has element type %d, expected %d", what[locked], types[locked].element_type,
               want[locked]);
      status = kStatusInvalidArgument;
      ++locked;
      break;
    }
  }
  if (!status) {
    char msg[256];
    edgeq_ternary_prepared* op = prepared_for(c, ptr[1], numel(&types[1].layout), ptr[2],
                                              numel(&types[2].layout), msg, sizeof(msg));
    if (!op || edgeq_ternary_run(op, (const int8_t*)ptr[0], types[0].layout.dimensions,
                                 (int)(types[0].layout.rank_bits & 0x7F), (int8_t*)ptr[3],
                                 numel(&types[3].layout), msg, sizeof(msg))) {
      ctx_fail(c, "%s", msg);
      status = kStatusInvalidArgument;
    }
  }
  for (int i = 0; i < locked; ++i) api.UnlockTensorBuffer(bufs[i]);
  return status;
}

static LiteRtStatus k_destroy(void* ud) {
  ((op_ctx*)ud)->nodes--;
  return 0;
}

static const LiteRtCustomOpKernel kKernel = {k_init, k_layouts, k_run, k_destroy};

/* ------------------------------------------------------------------------------------------ */
/* Sessions: one compiled model with its buffers.                                            */

#define MAX_IO 16

typedef struct {
  LiteRtEnvironment env;
  LiteRtModel model;
  LiteRtCompiledModel compiled;
  size_t n_in, n_out;
  LiteRtTensorBuffer in[MAX_IO], out[MAX_IO];
  int64_t in_bytes[MAX_IO], out_bytes[MAX_IO];
  op_ctx ops[2];
} session;

static int elem_size(int t) {
  switch (t) {
    case kElemBool:
    case kElemInt8:
    case kElemUInt8:
      return 1;
    case kElemInt16:
    case kElemFloat16:
      return 2;
    case kElemInt32:
    case kElemFloat32:
      return 4;
    case kElemInt64:
    case kElemFloat64:
      return 8;
    default:
      return 0;
  }
}

void edgeq_lrt_destroy(void* handle) {
  session* s = (session*)handle;
  if (!s) return;
  for (size_t i = 0; i < s->n_in; ++i)
    if (s->in[i]) api.DestroyTensorBuffer(s->in[i]);
  for (size_t i = 0; i < s->n_out; ++i)
    if (s->out[i]) api.DestroyTensorBuffer(s->out[i]);
  if (s->compiled) api.DestroyCompiledModel(s->compiled);
  if (s->model) api.DestroyModel(s->model);
  if (s->env) api.DestroyEnvironment(s->env);
  for (int k = 0; k < 2; ++k) prepared_clear(&s->ops[k]);
  free(s);
}

static int make_buffers(session* s, LiteRtSubgraph sg, int outputs, char* err, size_t errlen) {
  LiteRtParamIndex n = 0;
  if ((outputs ? api.GetNumSubgraphOutputs : api.GetNumSubgraphInputs)(sg, &n) || n > MAX_IO) {
    set_err(err, errlen, "cannot read the model's %s", outputs ? "outputs" : "inputs");
    return 1;
  }
  for (LiteRtParamIndex i = 0; i < n; ++i) {
    LiteRtTensor t;
    LiteRtRankedTensorType type;
    LiteRtTensorBufferRequirements req;
    size_t size = 0;
    int btype = 0;
    if ((outputs ? api.GetSubgraphOutput : api.GetSubgraphInput)(sg, i, &t) ||
        api.GetRankedTensorType(t, &type) ||
        (outputs ? api.GetOutputReqs : api.GetInputReqs)(s->compiled, 0, i, &req) ||
        api.ReqsBufferSize(req, &size) || api.ReqsBufferType(req, 0, &btype)) {
      set_err(err, errlen, "cannot read %s %zu of the model", outputs ? "output" : "input", i);
      return 1;
    }
    /* A dynamic dimension (the Keras batch, -1 in the shape signature) runs with size 1, the
     * static shape the converter wrote. */
    for (unsigned d = 0; d < (type.layout.rank_bits & 0x7F); ++d)
      if (type.layout.dimensions[d] < 0) type.layout.dimensions[d] = 1;
    LiteRtTensorBuffer buf;
    if (api.CreateManagedTensorBuffer(s->env, btype, &type, size, &buf)) {
      set_err(err, errlen, "cannot create a tensor buffer for %s %zu",
              outputs ? "output" : "input", i);
      return 1;
    }
    int64_t bytes = numel(&type.layout) * elem_size(type.element_type);
    if (outputs) {
      s->out[i] = buf;
      s->out_bytes[i] = bytes;
      s->n_out = i + 1;
    } else {
      s->in[i] = buf;
      s->in_bytes[i] = bytes;
      s->n_in = i + 1;
    }
  }
  return 0;
}

static int check_custom_ops(LiteRtSubgraph sg, int have_ternary, char* err, size_t errlen) {
  LiteRtParamIndex n = 0;
  if (api.GetNumSubgraphOps(sg, &n)) {
    set_err(err, errlen, "cannot list the model's ops");
    return 1;
  }
  for (LiteRtParamIndex i = 0; i < n; ++i) {
    void* op = NULL;
    int code = 0;
    const char* name = NULL;
    if (api.GetSubgraphOp(sg, i, &op) || api.GetOpCode(op, &code) || code != kOpCodeCustom)
      continue;
    if (api.GetCustomCode(op, &name) || !name) name = "?";
    int known = have_ternary && (!strcmp(name, "EDGEQ_TERNARY_FC") ||
                                 !strcmp(name, "EDGEQ_TERNARY_CONV2D"));
    if (!known) {
      set_err(err, errlen, "the model needs custom op %s (op %zu), and no kernel for it is loaded",
              name, i);
      return 1;
    }
  }
  return 0;
}

/* Compile `model_path` for the CPU; with register_ternary, the ternary kernels are registered. */
void* edgeq_lrt_create(const char* model_path, int register_ternary, char* err, size_t errlen) {
  if (!api.handle) {
    set_err(err, errlen, "libLiteRt.so is not loaded (call edgeq_lrt_load first)");
    return NULL;
  }
  session* s = (session*)calloc(1, sizeof(session));
  if (!s) return NULL;
  s->ops[0] = (op_ctx){.kind = EDGEQ_TERNARY_KIND_FC, .name = "EDGEQ_TERNARY_FC"};
  s->ops[1] = (op_ctx){.kind = EDGEQ_TERNARY_KIND_CONV2D, .name = "EDGEQ_TERNARY_CONV2D"};
  LiteRtOptions opts = NULL;
  LiteRtSubgraph sg;
  if (api.CreateEnvironment(0, NULL, &s->env)) {
    set_err(err, errlen, "LiteRtCreateEnvironment failed");
    goto fail;
  }
  if (api.CreateModelFromFile(s->env, model_path, &s->model)) {
    set_err(err, errlen, "LiteRT cannot read the model %s", model_path);
    goto fail;
  }
  /* LiteRT compiles a model with an unknown custom op and fails only when it runs: name the
   * missing op up front instead. */
  if (api.GetModelSubgraph(s->model, 0, &sg) || check_custom_ops(sg, register_ternary, err, errlen))
    goto fail;
  if (api.CreateOptions(&opts) || api.SetOptionsHardwareAccelerators(opts, kHwCpu)) {
    set_err(err, errlen, "cannot create LiteRT CPU options");
    goto fail;
  }
  if (register_ternary) {
    for (int k = 0; k < 2; ++k)
      if (api.AddCustomOpKernelOption(opts, s->ops[k].name, 1, &kKernel, &s->ops[k])) {
        set_err(err, errlen, "LiteRtAddCustomOpKernelOption(%s) failed", s->ops[k].name);
        goto fail;
      }
  }
  if (api.CreateCompiledModel(s->env, s->model, opts, &s->compiled)) {
    const char* why = s->ops[0].err[0] ? s->ops[0].err : s->ops[1].err;
    set_err(err, errlen,
            "LiteRT cannot compile %s for the CPU%s%s (an unregistered custom op is reported "
            "on stderr as 'Encountered unresolved custom op')",
            model_path, why[0] ? ": " : "", why);
    s->compiled = NULL;
    goto fail;
  }
  api.DestroyOptions(opts);
  opts = NULL;
  for (int k = 0; k < 2; ++k)
    if (s->ops[k].err[0]) {
      set_err(err, errlen, "%s", s->ops[k].err);
      goto fail;
    }
  if (make_buffers(s, sg, 0, err, errlen) ||
      make_buffers(s, sg, 1, err, errlen))
    goto fail;
  return s;
fail:
  if (opts) api.DestroyOptions(opts);
  edgeq_lrt_destroy(s);
  return NULL;
}

int edgeq_lrt_num_io(void* handle, int outputs) {
  session* s = (session*)handle;
  return (int)(outputs ? s->n_out : s->n_in);
}

int64_t edgeq_lrt_io_bytes(void* handle, int outputs, int index) {
  session* s = (session*)handle;
  if (index < 0 || (size_t)index >= (outputs ? s->n_out : s->n_in)) return -1;
  return outputs ? s->out_bytes[index] : s->in_bytes[index];
}

/* Copy `size` bytes into (outputs=0) or out of (outputs=1) tensor buffer `index`. */
int edgeq_lrt_copy(void* handle, int outputs, int index, void* data, size_t size, char* err,
                   size_t errlen) {
  session* s = (session*)handle;
  if (index < 0 || (size_t)index >= (outputs ? s->n_out : s->n_in)) {
    set_err(err, errlen, "no %s %d", outputs ? "output" : "input", index);
    return 1;
  }
  int64_t want = outputs ? s->out_bytes[index] : s->in_bytes[index];
  if ((int64_t)size != want) {
    set_err(err, errlen, "%s %d has %lld bytes, got %zu", outputs ? "output" : "input", index,
            (long long)want, size);
    return 1;
  }
  LiteRtTensorBuffer b = outputs ? s->out[index] : s->in[index];
  void* addr = NULL;
  if (api.LockTensorBuffer(b, &addr, outputs ? kLockRead : kLockWrite) || !addr) {
    set_err(err, errlen, "cannot lock %s buffer %d", outputs ? "output" : "input", index);
    return 1;
  }
  if (outputs)
    memcpy(data, addr, size);
  else
    memcpy(addr, data, size);
  api.UnlockTensorBuffer(b);
  return 0;
}

/* Run once; *elapsed_ns is the wall time of LiteRtRunCompiledModel alone. */
int edgeq_lrt_invoke(void* handle, int64_t* elapsed_ns, char* err, size_t errlen) {
  session* s = (session*)handle;
  s->ops[0].err[0] = s->ops[1].err[0] = '\0';
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  LiteRtStatus st = api.RunCompiledModel(s->compiled, 0, s->n_in, s->in, s->n_out, s->out);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (elapsed_ns)
    *elapsed_ns = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
  for (int k = 0; k < 2; ++k)
    if (s->ops[k].err[0]) {
      set_err(err, errlen, "%s", s->ops[k].err);
      return 1;
    }
  if (st) {
    set_err(err, errlen, "LiteRtRunCompiledModel failed with status %d", st);
    return 1;
  }
  return 0;
}

/* How many times each ternary kernel ran (proof that the custom op, not a fallback, executed). */
int64_t edgeq_lrt_kernel_runs(void* handle, int kind) {
  session* s = (session*)handle;
  return (kind == 0 || kind == 1) ? s->ops[kind].runs : -1;
}

/* How many ops each ternary kernel prepared (once per node when the node's buffers stay put). */
int64_t edgeq_lrt_kernel_prepares(void* handle, int kind) {
  session* s = (session*)handle;
  return (kind == 0 || kind == 1) ? s->ops[kind].prepares : -1;
}

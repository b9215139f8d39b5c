/* A stand-in for libedgetpu.so.1 in tests: a TFLite external-delegate library with the same entry
 * points (tflite_plugin_create_delegate / tflite_plugin_destroy_delegate) that takes no nodes.
 *
 * It behaves like libedgetpu's tflite_plugin_create_delegate
 * (libedgetpu tflite/edgetpu_delegate_for_custom_op_tflite_plugin.cc) where that matters:
 *   - "device" is "", ":N", "usb", "usb:N", "pci" or "pci:N"; any other value, or a device that is
 *     not there, makes create return NULL without calling the error reporter (exactly what
 *     libedgetpu does when it finds no accelerator). The stand-in "has" one USB accelerator;
 *     stand_in_devices=none takes it away.
 *   - every other option is accepted and passed on as a string.
 * Test hooks (options): stand_in_record=PATH appends "option KEY=VALUE" lines at create and a
 * "prepare" line when the runtime calls Prepare; stand_in_refuse=... makes create fail with a
 * message through the error reporter, as a delegate that rejects an option does.
 *
 * No TFLite headers ship with the runtimes' wheels, so TfLiteDelegate is declared here with the
 * layout of tensorflow/lite/core/c/common.h (fields in that order, flags int64_t, then
 * opaque_delegate_builder).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef int TfLiteBufferHandle;
struct TfLiteContext;
struct TfLiteTensor;
struct TfLiteOpaqueDelegateBuilder;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(struct TfLiteContext* context, struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(struct TfLiteContext* context, struct TfLiteDelegate* delegate,
                                       TfLiteBufferHandle buffer_handle, struct TfLiteTensor* tensor);
  TfLiteStatus (*CopyToBufferHandle)(struct TfLiteContext* context, struct TfLiteDelegate* delegate,
                                     TfLiteBufferHandle buffer_handle, struct TfLiteTensor* tensor);
  void (*FreeBufferHandle)(struct TfLiteContext* context, struct TfLiteDelegate* delegate,
                           TfLiteBufferHandle* handle);
  int64_t flags;
  struct TfLiteOpaqueDelegateBuilder* opaque_delegate_builder;
} TfLiteDelegate;

typedef void (*ErrorHandler)(const char*);

typedef struct {
  char record[4096];
} StandIn;

static void append_line(const char* path, const char* line) {
  if (!path || !path[0]) return;
  FILE* f = fopen(path, "a");
  if (!f) return;
  fputs(line, f);
  fputc('\n', f);
  fclose(f);
}

static TfLiteStatus Prepare(struct TfLiteContext* context, TfLiteDelegate* delegate) {
  (void)context;
  StandIn* s = (StandIn*)delegate->data_;
  append_line(s->record, "prepare");
  return kTfLiteOk; /* takes no nodes: nothing is replaced */
}

/* "usb", "usb:N", "pci", "pci:N", "" or ":N" as libedgetpu parses it; *kind is "usb", "pci" or "". */
static int parse_device(const char* v, char* kind, long* index) {
  const char* colon = strchr(v, ':');
  size_t n = colon ? (size_t)(colon - v) : strlen(v);
  if (n >= 8) return 0;
  memcpy(kind, v, n);
  kind[n] = 0;
  if (strcmp(kind, "usb") != 0 && strcmp(kind, "pci") != 0 && kind[0] != 0) return 0;
  *index = -1;
  if (colon) {
    char* end = NULL;
    if (!colon[1]) return 0;
    *index = strtol(colon + 1, &end, 10);
    if (*end || *index < 0) return 0;
  }
  return 1;
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                              ErrorHandler report_error) {
  const char* record = NULL;
  const char* device = NULL;
  int present = 1;
  for (size_t i = 0; i < n; ++i) {
    if (strcmp(keys[i], "stand_in_record") == 0) record = values[i];
    if (strcmp(keys[i], "device") == 0) device = values[i];
    if (strcmp(keys[i], "stand_in_devices") == 0 && strcmp(values[i], "none") == 0) present = 0;
  }
  for (size_t i = 0; i < n; ++i) {
    char line[1024];
    snprintf(line, sizeof line, "option %s=%s", keys[i], values[i]);
    append_line(record, line);
  }
  for (size_t i = 0; i < n; ++i) {
    if (strcmp(keys[i], "stand_in_refuse") == 0) {
      char msg[512];
      snprintf(msg, sizeof msg, "stand-in delegate: option stand_in_refuse=%s is not accepted", values[i]);
      if (report_error) report_error(msg);
      return NULL;
    }
  }
  if (device) {
    char kind[8];
    long index;
    if (!parse_device(device, kind, &index)) return NULL; /* libedgetpu: unknown form, NULL */
    /* The one accelerator the stand-in has is USB device 0. */
    if (strcmp(kind, "pci") == 0 || index > 0) present = 0;
  }
  if (!present) return NULL; /* libedgetpu: no matching Edge TPU, NULL and no message */
  StandIn* s = (StandIn*)calloc(1, sizeof(StandIn));
  TfLiteDelegate* d = (TfLiteDelegate*)calloc(1, sizeof(TfLiteDelegate));
  if (!s || !d) {
    free(s);
    free(d);
    return NULL;
  }
  if (record) snprintf(s->record, sizeof s->record, "%s", record);
  d->data_ = s;
  d->Prepare = Prepare;
  d->flags = 0;
  append_line(record, "created");
  return d;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (!delegate) return;
  StandIn* s = (StandIn*)delegate->data_;
  append_line(s ? s->record : NULL, "destroyed");
  free(s);
  free(delegate);
}

"""edgetpu_compiler output in its real format, for the parser tests (written for these tests).

The layout follows what compilers 14.1 to 16.0 print, as users have pasted it in Coral's issue
tracker: the version line, 16.0's timer line, "Model compiled successfully", the input/output and
memory lines, the subgraph and operation counts, the "not all operations" paragraph with the two
"Number of operations" lines (only when some ops stay on the CPU), and the "Operator Count Status"
table; the log file's own header ("Input:", "Output:"); and each way it fails.
"""

# 16.0, -s, every op mapped: no "Number of operations that will run" lines.
ALL_MAPPED_16 = (
    """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: student_int8.tflite
Input size: 52.71KiB
Output model: out/student_int8_edgetpu.tflite
Output size: 118.43KiB
On-chip memory used for caching model parameters: 49.25KiB
On-chip memory remaining for caching model parameters: 7.88MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 8
Operation log: out/student_int8_edgetpu.log

Operator                       Count      Status

CONV_2D                        3          Mapped to Edge TPU
MAX_POOL_2D                    2          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
Compilation child process completed within timeout period.
"""
    + "Compilation succeeded! \n"  # 16.0 ends these two lines with a space
)

# 16.0, -s, an unsupported op in the middle: the cut, then "More than one subgraph".
PARTIAL_16 = (
    """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 96 ms.

Input model: /data/models/leaky middle.tflite
Input size: 3.11KiB
Output model: /data/out/leaky middle_edgetpu.tflite
Output size: 4.87KiB
On-chip memory used for caching model parameters: 512.00B
On-chip memory remaining for caching model parameters: 8.00MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 6
Operation log: /data/out/leaky middle_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 1
Number of operations that will run on CPU: 5

Operator                       Count      Status

CONV_2D                        1          More than one subgraph is not supported
LEAKY_RELU                     1          Operation not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
MAX_POOL_2D                    1          More than one subgraph is not supported
CONV_2D                        1          Mapped to Edge TPU
RESHAPE                        1          More than one subgraph is not supported
Compilation child process completed within timeout period.
"""
    + "Compilation succeeded! \n"  # 16.0 ends these two lines with a space
)

# The operation log file 15.0 writes next to the model (no -s on stdout).
LOG_FILE_15 = """\
Edge TPU Compiler version 15.0.340273435
Input: model.tflite
Output: ./EdgeTPU/model_edgetpu.tflite

Operator                       Count      Status

RESIZE_NEAREST_NEIGHBOR        4          Operation version not supported
CONV_2D                        31         Mapped to Edge TPU
CONV_2D                        4          More than one subgraph is not supported
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
DEQUANTIZE                     1          Operation is working on an unsupported data type
RESHAPE                        2          Tensor has unsupported rank (up to 3 innermost dimensions mapped)
FULLY_CONNECTED                1          Filter, bias, or other param is not constant at compile-time
"""

# 15.0 stdout without -s: the table is only in the log file.
NO_TABLE_15 = """\
Edge TPU Compiler version 15.0.340273435

Model compiled successfully in 2644 ms.

Input model: model.tflite
Input size: 4.22MiB
Output model: ./EdgeTPU/model_edgetpu.tflite
Output size: 4.71MiB
On-chip memory used for caching model parameters: 3.21MiB
On-chip memory remaining for caching model parameters: 3.78MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 44
Operation log: ./EdgeTPU/model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 31
Number of operations that will run on CPU: 13
See the operation log file for individual operation details.
"""

NOT_QUANTIZED = """\
Edge TPU Compiler version 15.0.340273435
Invalid model: float_model.tflite
Model not quantized
"""

OP_VERSION_16 = """\
Edge TPU Compiler version 16.0.384591198
ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of this builtin might be supported. Are you using an old TFLite binary with a newer model?

ERROR: Registration failed.

Invalid model: student_int8.tflite
Model could not be parsed
"""

INTERNAL_14 = (
    """\
Edge TPU Compiler version 14.1.317412892

"""
    + "Internal compiler error. Aborting! \n"
)

DYNAMIC_16 = (
    """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
ERROR: Attempting to use a delegate that only supports static-sized tensors with a graph that has dynamic-sized tensors.
Compilation failed: Model failed in Tflite interpreter. Please ensure model can be loaded/run in Tflite interpreter.
Compilation child process completed within timeout period.
"""
    + "Compilation failed! \n"
)

TIMEOUT_16 = (
    """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
Compilation timeout. This is usually caused by large activations.
"""
    + "Compilation failed! \n"
)

BARE_FAILURE_16 = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
Compilation child process completed within timeout period.
Compilation failed!
"""

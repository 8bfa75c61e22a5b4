// The tinyqat commands, one file each in this directory; main.cpp dispatches
// `tinyqat <command> [options]` to them. Each takes the arguments from the
// command's name on, and returns the exit status or throws (main.cpp maps
// the exception to 2 or 1).
#pragma once

namespace tq::cli {

int run_train(int argc, char** argv);     // train.cpp
int run_qat(int argc, char** argv);       // qat.cpp
int run_ptq(int argc, char** argv);       // ptq.cpp
int run_dynamic(int argc, char** argv);   // dynamic.cpp
int run_eval(int argc, char** argv);      // eval.cpp
int run_inspect(int argc, char** argv);   // inspect.cpp
int run_compare(int argc, char** argv);   // compare.cpp
int run_pipeline(int argc, char** argv);  // pipeline.cpp
int run_lowbit(int argc, char** argv);    // lowbit.cpp
int run_report(int argc, char** argv);    // report.cpp
int run_bench(int argc, char** argv);     // bench.cpp
int run_run(int argc, char** argv);       // run.cpp
int run_export(int argc, char** argv);    // export.cpp
int run_import(int argc, char** argv);    // import.cpp
int run_sweep(int argc, char** argv);     // sweep.cpp

}  // namespace tq::cli

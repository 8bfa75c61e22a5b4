// The HTML report (docs/report.md): one self-contained page of pictures that
// show what quantization did to a model — training curves, each layer's
// weights on the int8 grid, the activation ranges the observers chose, the
// per-layer SQNR of the QAT / PTQ / dynamic models, and the summary table.
//
// Two halves, so that each can be tested alone:
//   gather_report()  reads the models (observers, qparams, weights) and runs
//                    the comparisons; it returns plain numbers (ReportData);
//   render_report()  draws ReportData as XHTML with inline SVG: no script, no
//                    network, nothing but our own code.
// write_report() does both and writes DIR/report.html (atomically).
//
// Files: report_data.{h,cpp} gathers, this pair renders the page, and
// report_svg.{h,cpp} is the chart kit the pictures are drawn with.
#pragma once

#include <cstdint>
#include <string>

#include "io/dataset.h"
#include "report_data.h"

namespace tq::cli {

// The page: XHTML (well-formed XML) with one inline <svg> per picture.
std::string render_report(const ReportData& data);

// gather + render, written to DIR/report.html (DIR is created); returns the path.
std::string write_report(const std::string& dir, const ReportRun& run, const ReportModels& models, const Tensor& inputs);

// `tinyqat report`: redraws the page from what `pipeline --report` left in
// `workdir` (the model files above and kReportRunFile; a missing run file
// leaves out the training curves and the table). Returns the page's path.
std::string write_report_from_workdir(const std::string& workdir, const std::string& out_dir, const io::Dataset& test,
                                      int64_t samples = 1000);

}  // namespace tq::cli

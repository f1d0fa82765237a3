// The paper's pictures (SPEC.md section 6: figures 2-5; tools/figures.py draws figure 1) as PNG
// grids, made from a trained model:
//   samples.png       one column per class: r_y = the class mean of r over validation data,
//                     v ~ N(0, I) down the rows
//   swap.png          row = class (r_y), column = style (v encoded from a validation image)
//   interpolation.png one row per class: v moving linearly between two same-class images at
//                     fixed r_y (the two originals at the ends)
//   reconstruction.png validation images (the first 2 of each class) above their reconstructions
//                     at r(x) (m = 1) and the mean of q(v | r(x), x)
//   latents.tsv       label, r(x) (m = 1) and v (posterior mean at the class's r_y) of every
//                     validation image: tools/figures.py draws figure 1 from it
// and, for a model with 2-D latents (figure 5):
//   r_plane.png       (d_r = 2) decoded grid over the plane of r at v = 0
//   v_grid.png        (d_v = 2) decoded grid of v over [-2, 2]^2 at each class's r_y
// and, for a semi-supervised run, confusion.png (write_confusion_png): q(y|x) on the test set.
#pragma once
#include <string>
#include <vector>

#include "model/equivae.h"
#include "train/data.h"

namespace equivae {

// Text around a grid: a title above it, a label above each column, one left of each row (any may
// be empty). Drawn in stb_easy_font's small bitmap font, black on the white margin; a label wider
// than its column is cut to fit.
struct GridText {
  std::string title;
  std::vector<std::string> columns, rows;
};

// images: n x c x h x w floats in [0, 1], laid out row by row in a rows x cols grid; `cells`, if
// given, is written inside the tiles, row by row.
void write_png_grid(const std::string& path, const std::vector<float>& images, int64_t rows, int64_t cols,
                    int64_t channels, int64_t height, int64_t width, const GridText& text = {},
                    const std::vector<std::string>& cells = {});
// The PNG's width and height: the grid (a 1-pixel gap around tiles) and the text's margins.
std::pair<int64_t, int64_t> grid_png_size(int64_t rows, int64_t cols, int64_t height, int64_t width,
                                          const GridText& text);

// A confusion matrix (counts[true * K + predicted], K = class_names.size()) as a K x K grid: row =
// true class, column = predicted one; each cell shaded by its share of its row (white: none,
// darkest grey: all) with its count written in it.
void write_confusion_png(const std::string& path, const std::vector<int64_t>& counts,
                         const std::vector<std::string>& class_names, const std::string& title);

// Writes the figures into `dir`, titled, with the class names of `validation` on their rows and
// columns; returns their paths.
std::vector<std::string> write_figures(const EquiVAE& model, Device device, const data::Dataset& validation,
                                       const std::string& dir, uint64_t seed);

}  // namespace equivae

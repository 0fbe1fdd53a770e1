# Run by coppice-interp in every Python kernel before its first request
# (ipykernel's --IPKernelApp.exec_files): the rich results E2B's code
# interpreter returns on top of IPython's own MIME types.
#
#   e2b/chart  a matplotlib Figure described as data: line, scatter, bar, pie,
#              box_and_whisker, superchart (several axes) or unknown, with
#              title, axis labels, units, scales, ticks and elements
#   e2b/data   a pandas DataFrame as {column: [values...]}
#   image/png  PIL's Image.save() also displays the image saved, and
#              Image.show() displays it instead of starting a viewer
#
# Everything is registered lazily (by type name, or when the module is first
# imported), so a kernel that never plots pays nothing for it. Nothing is left
# in the user's namespace but the formatters.


def _coppice_setup():
    import datetime
    import math
    import re
    import sys

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    ip = get_ipython()
    if ip is None:
        return

    class DictFormatter(BaseFormatter):
        # A formatter whose value is a JSON object (sent as is in the bundle).
        format_type = Unicode("e2b/unset")
        print_method = ObjectName("_repr_e2b_unset_")
        _return_type = (dict,)

    def add_formatter(mime):
        class F(DictFormatter):
            format_type = Unicode(mime)
            print_method = ObjectName("_repr_" + mime.replace("/", "_") + "_")

        f = F(parent=ip.display_formatter)
        ip.display_formatter.formatters[mime] = f
        return f

    # JSON has no NaN or infinity: those become null; numpy scalars become
    # plain numbers, dates ISO strings.
    def clean(v):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, int):
            return v
        if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
            return v.isoformat()
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        item = getattr(v, "item", None)  # numpy scalar
        if callable(item):
            try:
                return clean(item())
            except Exception:
                pass
        iso = getattr(v, "isoformat", None)  # pandas Timestamp
        if callable(iso):
            try:
                return iso()
            except Exception:
                pass
        if hasattr(v, "tolist"):
            return clean(v.tolist())
        return str(v)

    # --- DataFrame -> e2b/data ---------------------------------------------
    def frame_data(df):
        return clean(df.to_dict(orient="list"))

    data_fmt = add_formatter("e2b/data")
    data_fmt.for_type_by_name("pandas.core.frame", "DataFrame", frame_data)

    # --- Figure -> e2b/chart -----------------------------------------------
    unit_re = re.compile(r"\(([^()]*)\)\s*$|\[([^\[\]]*)\]\s*$")

    def text_or_none(s):
        s = (s or "").strip()
        return s or None

    def unit_of(label):
        if not label:
            return None
        m = unit_re.search(label)
        if not m:
            return None
        return text_or_none(m.group(1) if m.group(1) is not None else m.group(2))

    def num(v):
        try:
            f = float(v)
        except Exception:
            return None
        return f if math.isfinite(f) else None

    def label_of(artist):
        l = artist.get_label()
        if not l or str(l).startswith("_"):
            return None
        return str(l)

    def axis_scale(axis):
        from matplotlib import category, dates

        conv = axis.get_converter() if hasattr(axis, "get_converter") else getattr(axis, "converter", None)
        if isinstance(conv, category.StrCategoryConverter):
            return "categorical"
        date_convs = tuple(
            c for c in (getattr(dates, n, None) for n in ("DateConverter", "ConciseDateConverter", "_SwitchableDateConverter"))
            if c is not None
        )
        if (date_convs and isinstance(conv, date_convs)) or isinstance(
            axis.get_major_formatter(), (dates.DateFormatter, dates.AutoDateFormatter, dates.ConciseDateFormatter)
        ):
            return "datetime"
        return axis.get_scale()

    def value_on(axis_scale_name, v):
        # A coordinate as a client reads it: ISO text on a date axis, else a number.
        if axis_scale_name == "datetime":
            from matplotlib import dates

            f = num(v)
            return dates.num2date(f).isoformat() if f is not None else None
        return num(v)

    mathtext_re = re.compile(r"\\mathdefault|[${}]")

    def ticks(axis, scale):
        # The major ticks inside the view, as drawing the axes would show them
        # (mathtext such as $\\mathdefault{10^{3}}$ read as 10^3).
        try:
            lo, hi = sorted(axis.get_view_interval())
            locs = [t for t in axis.get_majorticklocs() if lo - 1e-9 * abs(hi - lo) <= t <= hi + 1e-9 * abs(hi - lo)]
            labels = [mathtext_re.sub("", str(l)) for l in axis.get_major_formatter().format_ticks(locs)]
        except Exception:
            return [], []
        if scale == "datetime":
            vals = [value_on(scale, t) for t in locs]
        else:
            vals = [num(t) for t in locs]
        return vals, [str(l) for l in labels]

    def base(ax, kind):
        return {"type": kind, "title": text_or_none(ax.get_title())}

    def two_d(ax, kind):
        out = base(ax, kind)
        xl, yl = text_or_none(ax.get_xlabel()), text_or_none(ax.get_ylabel())
        xs, ys = axis_scale(ax.xaxis), axis_scale(ax.yaxis)
        xt, xtl = ticks(ax.xaxis, xs)
        yt, ytl = ticks(ax.yaxis, ys)
        out.update(
            x_label=xl, y_label=yl, x_unit=unit_of(xl), y_unit=unit_of(yl), x_scale=xs, y_scale=ys,
            x_ticks=xt, x_tick_labels=xtl, y_ticks=yt, y_tick_labels=ytl,
        )
        return out

    def tick_label_at(axis, pos):
        # The label of the major tick nearest to `pos` (categories, names).
        try:
            locs = list(axis.get_majorticklocs())
            labels = axis.get_major_formatter().format_ticks(locs)
        except Exception:
            return None
        best = None
        for loc, lab in zip(locs, labels):
            d = abs(float(loc) - float(pos))
            if best is None or d < best[0]:
                best = (d, lab)
        if best is None or best[0] > 0.5:
            return None
        return str(best[1])

    def pie_chart(ax, wedges):
        out = base(ax, "pie")
        out["elements"] = [
            {"label": label_of(w), "angle": round(abs(w.theta2 - w.theta1), 4), "radius": num(w.r)} for w in wedges
        ]
        return out

    def bar_chart(ax, containers):
        out = two_d(ax, "bar")
        elements = []
        for c in containers:
            group = label_of(c)
            horizontal = getattr(c, "orientation", None) == "horizontal"
            for rect in c.patches:
                if horizontal:
                    pos, value, axis = rect.get_y() + rect.get_height() / 2, rect.get_width(), ax.yaxis
                else:
                    pos, value, axis = rect.get_x() + rect.get_width() / 2, rect.get_height(), ax.xaxis
                elements.append({"label": tick_label_at(axis, pos), "group": group, "value": num(value)})
        out["elements"] = elements
        return out

    def box_chart(ax, boxplots):
        out = two_d(ax, "box_and_whisker")
        elements = []
        for bp in boxplots:
            boxes, medians = bp.get("boxes", []), bp.get("medians", [])
            whiskers, fliers = bp.get("whiskers", []), bp.get("fliers", [])
            for i, box in enumerate(boxes):
                if hasattr(box, "get_path"):
                    verts = box.get_path().vertices
                    ys = [v[1] for v in verts]
                    xs = [v[0] for v in verts]
                else:
                    xs, ys = list(box.get_xdata()), list(box.get_ydata())
                wl = whiskers[2 * i : 2 * i + 2]
                wy = [y for w in wl for y in w.get_ydata()]
                fl = list(fliers[i].get_ydata()) if i < len(fliers) else []
                med = medians[i].get_ydata() if i < len(medians) else [None]
                center = (min(xs) + max(xs)) / 2 if xs else i + 1
                elements.append({
                    "label": tick_label_at(ax.xaxis, center),
                    "min": num(min(wy)) if wy else num(min(ys)),
                    "first_quartile": num(min(ys)),
                    "median": num(med[0]),
                    "third_quartile": num(max(ys)),
                    "max": num(max(wy)) if wy else num(max(ys)),
                    "outliers": [num(v) for v in fl],
                })
        out["elements"] = elements
        return out

    def line_chart(ax, lines):
        out = two_d(ax, "line")
        xs, ys = out["x_scale"], out["y_scale"]
        out["elements"] = [
            {"label": label_of(l), "points": [[value_on(xs, x), value_on(ys, y)] for x, y in l.get_xydata()]}
            for l in lines
        ]
        return out

    def scatter_chart(ax, colls):
        out = two_d(ax, "scatter")
        xs, ys = out["x_scale"], out["y_scale"]
        out["elements"] = [
            {"label": label_of(c), "points": [[value_on(xs, x), value_on(ys, y)] for x, y in c.get_offsets()]}
            for c in colls
        ]
        return out

    def axes_chart(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge

        boxplots = getattr(ax, "_coppice_boxplots", None)
        if boxplots:
            return box_chart(ax, boxplots)
        wedges = [p for p in ax.patches if isinstance(p, Wedge)]
        if wedges:
            return pie_chart(ax, wedges)
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        if bars:
            return bar_chart(ax, bars)
        lines = [l for l in ax.lines if len(l.get_xydata()) > 0]
        if lines:
            return line_chart(ax, lines)
        colls = [c for c in ax.collections if isinstance(c, PathCollection)]
        if colls:
            return scatter_chart(ax, colls)
        out = base(ax, "unknown")
        out["elements"] = []
        return out

    def figure_chart(fig):
        axes = [a for a in fig.axes if a.get_visible()]
        if len(axes) == 1:
            return clean(axes_chart(axes[0]))
        sup = getattr(fig, "_suptitle", None)
        title = text_or_none(sup.get_text()) if sup is not None else None
        if not axes:
            return {"type": "unknown", "title": title, "elements": []}
        return clean({"type": "superchart", "title": title, "elements": [axes_chart(a) for a in axes]})

    def figure_chart_safe(fig):
        # A figure the extraction does not understand still gets its PNG.
        try:
            return figure_chart(fig)
        except Exception as e:
            print("coppice: no chart for this figure: %r" % (e,), file=sys.__stderr__)
            return None

    # A method on Figure rather than a printer for its type: matplotlib's
    # inline backend removes every formatter's Figure printer when it starts.
    add_formatter("e2b/chart")

    def patch_figure(mod):
        Figure = getattr(mod, "Figure", None)
        if Figure is not None:
            Figure._repr_e2b_chart_ = figure_chart_safe

    # --- hooks that need the module itself: on first import ----------------
    def patch_boxplot(mod):
        Axes = getattr(mod, "Axes", None)
        if Axes is None or getattr(Axes.boxplot, "_coppice", False):
            return
        orig = Axes.boxplot

        def boxplot(self, *args, **kwargs):
            result = orig(self, *args, **kwargs)
            try:
                self.__dict__.setdefault("_coppice_boxplots", []).append(result)
            except Exception:
                pass
            return result

        boxplot._coppice = True
        boxplot.__doc__ = orig.__doc__
        boxplot.__wrapped__ = orig
        Axes.boxplot = boxplot

    def patch_image_save(mod):
        Image = getattr(mod, "Image", None)
        if Image is None or getattr(Image.save, "_coppice", False):
            return
        orig = Image.save

        def save(self, fp, *args, **kwargs):
            result = orig(self, fp, *args, **kwargs)
            # Only a save in the user's own code: matplotlib writes its PNGs
            # through PIL too.
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.split(".")[0] in ("matplotlib", "PIL", "IPython", "matplotlib_inline", "ipykernel"):
                return result
            try:
                from IPython.display import display

                display(self)
            except Exception:
                pass
            return result

        save._coppice = True
        save.__doc__ = orig.__doc__
        save.__wrapped__ = orig
        Image.save = save

        # show() opens an external viewer: in a kernel, display the image
        # instead (PIL's own IPython viewer ranks below any viewer installed).
        orig_show = Image.show

        def show(self, *args, **kwargs):
            try:
                from IPython.display import display

                display(self)
            except Exception:
                return orig_show(self, *args, **kwargs)

        show.__doc__ = orig_show.__doc__
        show.__wrapped__ = orig_show
        Image.show = show

    hooks = {"matplotlib.figure": patch_figure, "matplotlib.axes._axes": patch_boxplot, "PIL.Image": patch_image_save}

    import importlib.abc
    import importlib.machinery

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in hooks:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            loader, fn = spec.loader, hooks[name]

            class Loader(importlib.abc.Loader):
                def create_module(self, s):
                    return loader.create_module(s)

                def exec_module(self, module):
                    loader.exec_module(module)
                    try:
                        fn(module)
                    except Exception:
                        pass

            spec.loader = Loader()
            return spec

    for name, fn in hooks.items():
        if name in sys.modules:
            fn(sys.modules[name])
    sys.meta_path.insert(0, Hook())


_coppice_setup()
del _coppice_setup

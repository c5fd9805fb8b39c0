"""Train the mast-cell crop classifier (mastctl/morphology/mast_net.npz) from synthetic and real tissue.

What each data set is for is declared here, before anything is measured:

- synthetic tiles of seeds 1000+ in the training styles (gut at 0.5 and 0.25 um/px, sheet, carcinoma):
  TRAIN, crops at the true cell centres, mast cell or not. Never seeds 8000-8001 (development: the
  threshold is checked there), 9000 (validation) or the held-out style ``faded``.
- 120 tiles of bench/other_renderer.py (a second renderer of the same criteria, none of ``mastctl.synth``'s code;
  seeds [1000, 20, i], 0.5 um/px; ``--other-renderer``, since 2026-12-07): TRAIN, crops at the true cell centres.
  Its seed 0 is a CHOOSE set and seed 1 is REPORTED (bench/real_tissue.py); both are 16 tiles no net trains on.
- 120 tiles of bench/fourth_renderer.py (seeds [1000, 40, i]; ``--fourth-renderer``, the recipe since a stop on
  2026-12-07, below): TRAIN.
  bench/third_renderer.py's tiles are never read here: they are REPORTED only (bench/real_tissue.py).
- ccMCT ``tb0_*``/``tb1_*`` (augmented mosaics of a canine mast cell tumour; scale unknown, so each crop
  is used at 0.25, 0.35 and 0.45 um/px): TRAIN, weak positives. Every nucleus the morphology detector
  finds outside the drawn annotation boxes, with a nucleus of at least 30 um^2 at that scale and not
  among the smallest 40% of that crop's nuclei (the small dark nuclei of a sheet are mostly lymphocytes
  and granulocytes, and at a wrong assumed scale the area in um^2 lets them through), with at least 6 nuclei
  within 20 um (in a sheet, not the crop's stroma), is a mast cell, cropped at its seeded centre and at the
  shipped nucleus finder's centre of it.
  ``tb2_*``: CHOOSE (the decision threshold). ``vb0_*``: only REPORTED, by bench/real_tissue.py.
  Weak negatives from the same slides (``--ccmct-negatives``, 0.15): the smallest 15% of each crop's nuclei
  (lymphocytes, granulocytes) and its spindle nuclei (elongation 2.5 or more: fibroblasts, endothelium),
  so that the net cannot tell mast cells from the rest by what tells this laboratory's slides from CRC's.
- CRC nuclei (colorectal adenocarcinoma): TRAIN, negatives (mast cells are rare there), crops at the
  marked nucleus centres and at every nucleus the morphology detector finds there. Two-fold: ``crc-fold{K}.npz`` leaves out half K, which bench/real_tissue.py
  then reports on (``--crc-models OUT/crc-fold0.npz,OUT/crc-fold1.npz --crc-option mast_net``). The
  shipped net uses all 50 images but the threshold's (below), so its own CRC figures are not a measure
  of transfer.
- Three more H&E sources with no mast cell tumour, every nucleus the detector finds (seeded, and found by
  the shipped nucleus finder) a negative: OS-1 (an OpenSlide test carcinoma of round nuclei in nests) left
  half TRAIN, right half CHOOSE; the same-section H&E of ``pairs/``: TRAIN; the normal skin of
  ``wsi/cmu_small_region.svs`` (epidermis and dermis; a normal dermis holds a few real mast cells, so weak
  negatives like CRC's) top half TRAIN, bottom half CHOOSE (the whole detector is run on it). No skin is
  reported on: the slide has no third part.

Threshold (declared): every fifth CRC image of each half is not trained on but kept for the threshold:
the lowest of 0.2, 0.3, ..., 0.95, 0.98 at which the net, beside the criteria model in the default detector
(``classify``), adds mast calls to at most 0.3% of those images' cells (the criteria model's own calls
are about 0.15% of CRC epithelium: the target is 0.5%), calls at most 0.5% of the OS-1 right half's
nuclei mast, with which the whole default detector calls at most 15% of the skin's choose half's cells mast
cells (MAX_SKIN, ``--max-skin``), and at least 75% of its mast calls on the development style's 16 tiles (``washed``,
seed 8000) are mast cells (MIN_DEV_PRECISION, ``--min-dev-precision``), written into the net as a logit shift (so
P = 0.5 decides). (70% until 2026-12-06: with the nucleus finder that reads the absorption the shipped net passed it
at 0.4 by a hair, 71.7%, and on the choose sets 0.4 against 0.5 traded tb2 0.744 / 0.635 for washed mast F1 0.809 /
0.860 and dev gut 0.951 / 0.975; the held-out style's failure is precision.) The net is read as the default detector
reads it: since 2026-12-07 with eight turns and flips of each crop near its decision point (``mastnet.DEFAULT_VIEWS``;
below). ``--rethreshold NET`` runs the rule again on a net's weights without training (``rethreshold``).

Crop positions (``--finder``): the shipped net was fitted at the nuclei of the finder shipped before 2026-12-06 (it
read stain concentrations through each image's own vectors); the finder that replaced it gives other positions, and
a net fitted at them (seed 0) lost on the choose sets (at the rule's 0.4: tb2 0.682, washed 0.803, dev gut 0.955;
at 0.5: 0.588 / 0.843 / 0.975; seed 1 took 0.6: tb2 0.340). To rebuild the shipped net bit for bit:

    git show 6073c6f:mastctl/morphology/nucleus_net.safetensors > /tmp/old-finder.safetensors
    python bench/train_mast_net.py --finder /tmp/old-finder.safetensors  # and --two-fold DIR

Rebuilt so on 2026-12-06, after the strided nucleus finder and the stricter veto of explicit calls
(``morphology.NET_VETO_EXPLICIT``) went into the detector the threshold rule runs: every weight and the threshold (0.5)
bit for bit; the figures the header records are that detector's (development precision 82.8% against 80.2%, the
skin's choose half 0.40% against 0.25%), so the file's bytes differ. At 0.4 the development precision is 71.6%.

(Earlier versions of the threshold rule counted the
net's calls over all of those nuclei alone, which the detector turned into 0.5-0.75% of the epithelium,
and stopped at 0.5, which a better net did not need; the epithelial nuclei of five images, 600-700, are
too few to choose by: the criteria model alone calls 3 of one half's 739.)

Recipe: the net reads 40 x 40 px crops at 0.5 um/px (INPUT_POOL = 1; at 1 um/px round carcinoma nuclei
passed for mast cells more often) of the stain maps through fixed vectors (``--basis reference``, Macenko's
reference H&E) after the image's colour cast is taken out (``stain.without_cast``), with stain-strength
(GAIN_SD, eosin widest), stain cross-talk (MIX_SD), colour-cast (CAST_SD), chromatin-contrast, focus (FOCUS:
a Gaussian of 0-1.3 um on 80% of batches), noise, flip and turn augmentation; batches mix synthetic 35%,
ccMCT 15%, CRC 40%, other H&E 10% (``--mix``).

Why fixed vectors (2026-12-05): the nets before read the image's own Macenko vectors (``--basis image``). On
small crops that estimate jumps with what the crop holds: in sheets of purple tumour cells the "eosin"
extreme is no eosin at all (20-75 degrees off), and the estimate then falls back to the standard eosin. That
regime held 62% of the ccMCT training crops (tb0/tb1), 14% of the CRC images and no OS-1, pairs/ or training
style tile, and the net learned it: on the vb0 crops it called 0.6-0.8 of the cells mast in that regime and
0.02-0.2 in the other. Through fixed vectors the source's colour is visible instead, so the eosin strength,
cross-talk and focus augmentation were widened, a colour cast is removed (a blue white balance reads as 0.26
hematoxylin on every pixel through fixed vectors: the development style ``washed`` lost 0.75 -> 0.30) and the
ccMCT slides give negatives too. Choose sets, two seeds each (tb2 / washed / dev gut; the CRC threshold images'
cells the net adds; epithelium 0.00% for every fixed-basis net):
  image basis (the previous recipe, seed 0, rebuilt here bit for bit): 0.456 / 0.747 / 0.944; 0.27%
  fixed basis alone: 0.950, 0.954 / 0.301, 0.391 / 0.899, 0.797; 0.11%, 0.30%
  + ccMCT negatives, eosin gain 0.6, cross-talk 0.2: 0.845, 0.863 / 0.358, 0.247 / 0.911, 0.860; 0.22%, 0.24%
  + cast removed, cast augmentation: 0.721, 0.806 / 0.635, 0.713 / 0.963, 0.897; 0.16%, 0.16%
  + focus on 80% of batches up to 1.3 um (shipped, seed 0): 0.711, 0.792 / 0.795, 0.717 / 0.950, 0.903; 0.11%, 0.14%
  + 120 tiles of randomly drawn styles (``--random-styles 120``, ``random_style``; not shipped): 0.789, 0.859 / 0.695,
    0.613 / 0.907, 0.860; the rule took thresholds 0.3 and 0.2 (0.4, 0.3 without), and the held-out CRC images' cells
    called mast by the whole detector rose (0.81%, 0.90% against 0.60%, 0.78%)
Normal skin (2026-12-05): the shipped net above called 37.5% of the cells of a normal skin's dermis and epidermis
(the choose half of wsi/cmu_small_region.svs) mast cells, about 1,500 per mm^2 where a normal dermis holds tens to
a hundred: its dermal stroma cells, most of them nuclei the stain-threshold seeds miss and only the finder finds,
which the net had never been trained on (it was asked about them at run time), with the sheet rule promoting their
neighbours. Skin negatives alone, at the seeded nuclei, did not move it (the detector's calls on the choose half
22.7% and 33.1% at the thresholds the rule took, 0.3 and 0.2); crops at the finder's nuclei as well (negatives of the
other sources, ccMCT positives re-centred) and ccMCT positives only in sheets did. The detector with that net,
on the choose sets (tb2 / skin choose half / CRC threshold images' cells and epithelium / dev gut / washed):
  the previous net, threshold 0.4: 0.711 / 37.5% / 0.60%, 0.22% / 0.950 / 0.795
  finder positions, seed 0, threshold 0.3: 0.834 / 24.7% / 1.05%, 0.30% / 0.913 / 0.638
                                 0.4: 0.771 / 18.8% / 0.66%, 0.22% / 0.935 / 0.748
                                 0.5 (shipped): 0.665 / 13.6% / 0.57%, 0.22% / 0.963 / 0.826
                                 0.6, 0.7: tb2 0.526, 0.396 / 8.3%, 3.8%
  seed 1, threshold 0.4: 0.653 / 25.0% / 0.54%, 0.22% / 0.959 / 0.773 (0.5-0.7: tb2 0.529, 0.369, 0.226 / 18.8%,
    12.4%, 6.9%)
The old rule (CRC and OS-1 alone) took 0.3 for seed 0, so the skin bound was added, and set at 15% after these
figures were seen: 5% (a count 2-3 times a normal dermis's) would have cost half of tb2. The trade-off between
tumour sheets and normal stroma is the net's, not the rule's: it does not tell a dermal fibroblast from a
neoplastic mast cell well enough yet. Most of the skin's calls are the sheet rule's (without it 3.4%); letting it promote
only cells with a seeded region (not the finder's alone), tried last on the choose sets and not yet shipped (the
threshold rule would have to be run again): at 0.5 tb2 0.513, skin 3.6%, washed 0.838; at 0.4 0.611, 7.5%, 0.768.
Collagen (2026-12-05, later): those skin calls sat on collagen, not on cells: the finder's peaks where no nucleus is,
which the detector now drops (``morphology.FOUND_MIN_H_OVER_E``: a nucleus only the finder found needs 0.5
hematoxylin per eosin at its centre). With that, the skin bound no longer decides (the shipped net's detector calls
1.7%, 1.1%, 0.9% of the skin's cells mast at 0.3, 0.4, 0.5) and the rule would take 0.3, where the CRC threshold
images' cells called mast by the whole detector double (0.57% -> 1.05%) and the development style's precision falls
(0.74 -> 0.54; F1 0.83 -> 0.67): the unseen style's failure is precision (lymphocytes and plasma cells), so the
rule bounds it (70%: 0.54, 0.64, 0.74, 0.79 at 0.3-0.6; with the net's veto, ``morphology.NET_VETO``, 0.55, 0.67,
0.78 at 0.3-0.5). Rebuilt with both: the shipped net bit for bit (0.5), the fold nets at 0.4 (70.9%) and 0.5.
Seed ensembles (2026-12-06, not shipped): nets of this recipe at seeds 1 and 2 (the old finder's positions), their
logits averaged with the shipped net's, the rule run on the mean (with the strided finder in the detector: the
shipped net alone still takes 0.5, development precision 79.7%). Seeds 0+1 took 0.5 (81.5%), seeds 0+1+2 took 0.4
(76.4%). The whole detector on the choose sets (tb2 / CRC threshold images' cells called mast / OS-1 right half /
skin choose half / dev gut / washed): shipped 0.671 / 0.18% / 0 of 124 / 4 of 1,005 / 0.975 / 0.865; 0+1 at 0.5
0.592 / 0.09% / 0 / 3 / 0.983 / 0.876; 0+1+2 at 0.4 0.746 / 0.15% (epithelium 0.07%) / 0 / 8 / 0.967 / 0.849, at 0.5
0.604 / 0.09% / 0 / 4 / 0.983 / 0.871. Along the threshold the ensemble trades tb2 for washed as one net does (at
the shipped net's tb2 about the same washed): averaging seeds does not move the trade-off, and costs a net per seed.
Seed spread of this recipe, each seed alone with its own rule (the detector of 2026-12-06, explicit veto 0.3 in):
seed 0 (shipped) 0.5: tb2 0.671, washed 0.883, dev gut 0.970, skin 4 of 1,005; seed 1 took 0.6 (development
precision 74.8% at 0.5, just under the bound): tb2 0.377, washed 0.855, gut 0.979, skin 5; seed 2 took 0.5: tb2
0.689, washed 0.863, gut 0.966, skin 11 (CRC threshold images 0.03-0.18%, epithelium 0, OS-1 0 for all). A recipe
change has to beat that spread over three seeds or more before it is believed.
Randomly drawn styles again (2026-12-06, later; ``--random-styles 120``, the old finder's positions, seeds 0-2, each
with the rule as it now stands): all three took 0.5; tb2 0.558 / 0.576 / 0.718 (mean 0.617 against the shipped recipe's
0.579), washed 0.832 / 0.874 / 0.891 (mean 0.866 against 0.867), seed 8001 0.889 / 0.889 / 0.856, dev gut 0.970 /
0.963 / 0.955, skin 5 / 2 / 7 calls: inside the spread, not shipped. Nor does scaling the hematoxylin map at run time so
that each image's 99th percentile reads 1.3 or 1.5 (the training styles' is about 1.5, washed's 1.07, CRC's 1.8 +- 0.6):
washed 0.881 / 0.880 against 0.883, tb2 0.702 / 0.667, the CRC cells called mast 0.46% / 0.44% against 0.40%.
Nor a net of valid (unpadded) convolutions over 48 px (24 um) crops shifted by up to 3 px, which the detector could
read a whole image with in one pass (2026-12-06, later; for speed: detection 91.7 -> 75.5 ms a CRC tile, 68.2 -> 59.4
with one BLAS thread): six draws
(seeds 0-2 at the shipped and at the old finder's nuclei), each with its rule, on tb2 / washed mean of six draws:
0.586 / 0.885, 0.761 / 0.848, 0.623 / 0.884 and 0.694 / 0.870, 0.641 / 0.855, 0.618 / 0.875, against the shipped
net's 0.671 / 0.893 (README, the speed paragraphs).
Nor four times the training (2026-12-06, last; ``--steps 8000``, the old finder's positions, seeds 0-2, each with the rule as it
now stands; 6 minutes of training each): the rule took 0.4, 0.3, 0.4; tb2 0.697 / 0.755 / 0.707 (the shipped recipe's
seeds 0.671 / 0.377 / 0.689), skin 3 / 1 / 2 calls (4 / 5 / 11), the 50 CRC images' cells called mast 0.29% / 0.80% /
0.45%, but washed 0.868 / 0.845 / 0.849 at seed 8000 (0.883 / 0.855 / 0.863) and 0.901 / 0.881 / 0.881 over seeds
8000-8005 (the shipped net 0.893): steadier on real tissue, no gain on the unseen style it was tried for (at its lower
thresholds recall 0.93-0.95, precision 0.76-0.81). Not shipped. (Reading the seed-0 log for its choose lines, the vb0
cell counts it also prints were seen: 586 mast calls against the shipped net's 749.)
Nor JPEG in the synthetic training tiles (2026-12-06, a new stop; ``--synthetic-jpeg 0.5``: half the tiles saved at
quality 50-90 before they are cropped, as a scanner's JPEG; the old finder's positions, seeds 0-2, each with its rule).
No training tile had JPEG artefacts, while the unseen styles and real slides do; on the development tiles JPEG 50-75
costs the shipped detector 0.971 -> 0.943 of the gut style's mast F1 (seeds 8000-8002; the net's calls, precision
0.967 -> 0.922), while ``washed`` without its JPEG scores the same (0.888 against 0.894): that style's errors are not
JPEG's. The rule took 0.4, 0.5, 0.5; tb2 0.779 / 0.544 / 0.666, washed 0.843 / 0.863 / 0.846 at seed 8000 and 0.862 /
0.868 / 0.857 over seeds 8000-8005 (the shipped net 0.893), gut with JPEG 0.943 / 0.950 / 0.937 (the shipped net
0.943), skin 4 / 3 / 1 calls, the 50 CRC images' cells called mast 0.75% / 0.14% / 0.38%. Seed 0 at 0.5, against its
rule, beat the shipped net on every choose set (tb2 0.683, washed 0.900 over six draws, gut with JPEG 0.963, CRC
0.35%), but seeds 1 and 2 did not: inside the seed spread, not shipped.
A second renderer (2026-12-07, shipped; ``--other-renderer 120``, now the default). Every synthetic crop the nets had
learned came from one drawing code, and the shipped detector scored mast F1 0.575 on 16 tiles of bench/other_renderer.py
(seed 0, CHOOSE; written that day from the criteria of shared/docs/domain.md, none of ``mastctl.synth``'s code): it
took lymphocytes and plasma cells for implicit mast cells and missed most implicit ones. With 120 of its tiles among the
synthetic crops (seeds [1000, 20, i], 616 mast cells among 10,957), three seeds against the recipe without them, rebuilt
on the same machine (it no longer gives the shipped net bit for bit: another CPU, other float rounding), each with its
rule, on the choose sets (tb2 / washed, mean of seeds 8000-8005 / skin calls / the 50 CRC images' cells called mast /
the other renderer's seed 0, which the new nets saw other tiles of):
  without: seed 0 (0.5) 0.684 / 0.882 / 8 / 0.38% / 0.483; seed 1 (0.5) 0.479 / 0.850 / 3 / 0.17% / 0.586;
           seed 2 (0.5) 0.685 / 0.857 / 18 / 0.29% / 0.500 (means 0.616 / 0.863 / 10 / 0.28% / 0.523)
  with:    seed 0 (0.5) 0.640 / 0.883 / 4 / 0.28% / 0.745; seed 1 (0.5) 0.535 / 0.859 / 6 / 0.09% / 0.742;
           seed 2 (0.4) 0.775 / 0.880 / 8 / 0.64% / 0.764 (means 0.650 / 0.874 / 6 / 0.34% / 0.750)
On the mean of three seeds tb2 and washed gained and the skin's calls fell, the CRC cells called mast rose a little
(seed 2's rule took 0.4), all inside the spread of the seeds, and the second renderer's tiles were learned. The
development style did not show a transfer gain from the second renderer (it is the first renderer's), so what it buys
on a third is not measured here; it is shipped because a net that has seen two renderings of the criteria has less of
one renderer to learn by heart, and nothing measured lost beyond the seeds' spread. Seed 0 shipped, as before. Reported
once, after: ccMCT vb0 0.687 (the shipped net of 2026-12-06 0.783; the recipe without the second renderer rebuilt on
this machine 0.727), faded 0.810 (0.820; 0.814), CRC two-fold 0.22% of cells, 0.00% of epithelium (README).
Did it carry to a third renderer (2026-12-07, later; bench/third_renderer.py, written after the second, its 48 tiles
REPORTED by bench/real_tissue.py and read by no script that fits or chooses)? The six nets above rebuilt on another
machine, each with its rule: without 0.798 (0.4) / 0.796 (0.5) / 0.767 (0.5), mean 0.787; with 0.873 (0.4) / 0.894
(0.4) / 0.810 (0.4), mean 0.859: every seed with the second renderer above every seed without it, by precision
(0.73-0.90 against 0.69-0.73). A measurement after the choice, not a choice.
A fourth renderer (2026-12-07, later; ``--fourth-renderer 120``, bench/fourth_renderer.py: spectral stains, metaball
shapes, Fourier-shaped textures, mast cells beside vessels; seeds [1000, 40, i]), tried and not shipped. Three seeds
beside the shipped recipe's three, all built on that machine, each with its rule, on the choose sets (tb2 / washed,
mean of seeds 8000-8005 / skin calls / the 50 CRC images' cells called mast / the second renderer's seed 0):
  shipped recipe: seed 0 (0.4) 0.730 / 0.887 / 10 / 0.44% / 0.758; seed 1 (0.4) 0.633 / 0.853 / 5 / 0.14% / 0.729;
           seed 2 (0.4) 0.788 / 0.867 / 9 / 0.75% / 0.758 (means 0.717 / 0.869 / 8 / 0.44% / 0.748)
  with the fourth: seed 0 (0.5) 0.639 / 0.874 / 3 / 0.22% / 0.814; seed 1 (0.4) 0.715 / 0.852 / 4 / 0.27% / 0.738;
           seed 2 (0.4) 0.780 / 0.866 / 2 / 0.49% / 0.750 (means 0.711 / 0.864 / 3 / 0.33% / 0.767)
Every choose set held inside the seeds' spread, the skin's calls fell (8 -> 3 on the mean) and the CRC share with them.
By the second renderer's reasoning it could ship; it did not on that day because shipping a net means rebuilding the
CRC fold nets and fold finders and re-measuring every README column, which the day had no time left for. Its nets were
not scored on the third renderer, so that figure can still be reported, not chosen on, if a later session ships it.
Shipped at a later stop (2026-12-07): measured again as the detector now reads a net (eight views near the decision
point, each net's rule run that way) against the three seeds of the recipe without it rebuilt that day on the same
machine (the JPEG paragraph's "shipped recipe" rows). Declared before: shipped if the means of tb2, washed, the second
renderer's seed 0 and the 50 CRC images' share each lie within those seeds' range, the skin's mean calls at most their
largest (8), and the JPEG line's skin calls at q70 and CRC share at q90 at most theirs (66, 0.36%). Each took 0.4
(tb2 / skin calls / the 50 CRC images' cells called mast / the second renderer's seed 0 / washed, mean of seeds
8000-8005; then the JPEG line: the CRC threshold images as PNG, q90, q70; the skin's calls as PNG, q90, q70):
  with the fourth: seed 0 (0.4) 0.744 / 4 / 0.24% / 0.825 / 0.867; 0.18%, 0.36%, 0.12%; 4, 14, 30
                   seed 1 (0.4) 0.695 / 2 / 0.11% / 0.785 / 0.870; 0.06%, 0.12%, 0.06%; 2, 7, 21
                   seed 2 (0.4) 0.785 / 4 / 0.21% / 0.765 / 0.888; 0.12%, 0.15%, 0.09%; 4, 9, 27
                   (means 0.741 / 3.3 / 0.19% / 0.792 / 0.875; 0.12%, 0.21%, 0.09%; 3, 10, 26)
  without (above): means 0.741 / 5.7 / 0.31% / 0.788 / 0.881; 0.13%, 0.24%, 0.14%; 6, 21, 44
Every bound held; the skin's calls fell again (as PNG 5.7 -> 3.3, at q70 44 -> 26: a net that has seen a spectral
renderer's colours reads a JPEG copy as less mast-like), washed lost 0.006 inside its spread. Seed 0 shipped, with its
CRC fold nets (``--two-fold``); ``python bench/train_mast_net.py --finder /tmp/old-finder.safetensors`` rebuilds it.
Read after the choice (REPORT sets; the runs above printed them, not looked at until the net shipped): the third
renderer 0.882 / 0.868 / 0.848 against 0.876 / 0.904 / 0.869 (means 0.866 / 0.883), faded 0.786 / 0.730 / 0.718 against
0.773 / 0.796 / 0.763 (0.745 / 0.777), ccMCT vb0 0.754 / 0.684 / 0.690 against 0.860 / 0.587 / 0.771 (0.709 / 0.739):
lower on the mean of every report set, inside the seeds' spread. Kept, as declared; a later recipe choice should weigh
it.
Turns and flips at run time (2026-12-07, later; shipped): the net was trained on every turn and flip of its crops,
and the detector now reads a crop whose logit lies within 3 of the decision point in eight of them and takes the
mean logit (``MastNet.views``, ``-O mast_net_views``). Decided on the choose sets with the shipped weights, each line
one run of bench/real_tissue.py --choose --dev-draws 6 (tb2 / skin calls / the 50 CRC images' cells and epithelium
called mast / the second renderer's seed 0 / washed, mean of seeds 8000-8005):
  one view, threshold 0.5 (as shipped before): 0.640 / 5 / 0.28%, 0.02% / 0.745 / 0.883
  two views at 0.5: 0.634 / 7 / 0.19%, 0.02% / 0.786 / 0.895
  four views at 0.5: 0.649 / 4 / 0.21%, 0.05% / 0.792 / 0.898
  eight views at 0.5: 0.649 / 3 / 0.12%, 0.00% / 0.809 / 0.894 (the same, figure for figure, as all eight views of
    every crop: a gate of 4 sent 15% of a CRC tile's crops to the other seven views, and nearly all of tb2's; the
    shipped gate of 3 sends 6%, and gave the same figures but tb2 0.769, the CRC cells 0.28%, washed 0.872)
Eight views at 0.5 held or gained on every set, so the rule was run again on the shipped weights read that way: it took
0.4 (CRC threshold images 0.05% added, OS-1 0, skin 0.50%, development precision 76.3%; with one view 0.4 failed
there at 71.8%), with four views 0.4 too (75.7%). At the rule's threshold:
  eight views at 0.4 (shipped): 0.770 / 5 / 0.29%, 0.05% / 0.758 / 0.871
  four views at 0.4: 0.755 / 7 / 0.35%, 0.09% / 0.739 / 0.868
Against the single view at 0.5 the shipped reading trades 0.012 of washed (inside its draws' spread) for 0.13 of tb2
(real tumour cells), with the skin and the CRC as they were; the rule was kept as declared, not set aside for 0.5.
The weights are the shipped ones, bit for bit; the file's threshold and ``views`` are the rule's:

    python bench/train_mast_net.py --rethreshold mastctl/morphology/mast_net.npz --finder /tmp/old-finder.safetensors

JPEG copies of the real training images (2026-12-07, a new stop; ``--real-jpeg 60,95``, not shipped). A scanner's JPEG
raises the shipped net's logits on every real set: the same nuclei read from a copy saved at quality 95 / 90 / 70 gain
0.30 / 0.40 / 0.57 on CRC (every fifth image) and 0.23 / 0.25 / 0.38 on ccMCT vb0, and the whole detector (as
bench/real_tissue.py's ``JPEG`` choose line reads it: the normal skin's choose half and the CRC threshold images as PNG
and saved at quality 90 and 70) calls 5 / 19 / 35 of the skin's ~1,000 cells mast and 0.15% / 0.33% / 0.16% of the CRC
images' cells: the net's promotions and, after them, the sheet rule's. The ccMCT positives are crops of slides
saved as JPEG, the CRC and other negatives less so, so a net may learn the artefacts as mast evidence (and chroma
subsampling bleeds a nucleus's hematoxylin into the cytoplasm around it, the purple a mast cell shows). With every real
training image (ccMCT tb0/tb1, the CRC training images, OS-1's left half, pairs/, the skin's top half; not the
threshold's or the choose sets') also cut from a copy saved at a quality drawn per image from 60-95, three seeds against
three of the shipped recipe rebuilt on the same machine, the old finder's positions, each with its rule (tb2 / skin
calls / the 50 CRC images' cells called mast / the second renderer's seed 0 / washed, mean of seeds 8000-8005; then
the JPEG line: the CRC threshold images as PNG, q90, q70; the skin's calls as PNG, q90, q70):
  shipped recipe: seed 0 (0.3) 0.803 / 8 / 0.50% / 0.787 / 0.870; 0.21%, 0.36%, 0.28%; 8, 33, 66
                  seed 1 (0.4) 0.607 / 4 / 0.06% / 0.760 / 0.881; 0.03%, 0.06%, 0.03%; 4, 9, 22
                  seed 2 (0.4) 0.812 / 5 / 0.36% / 0.816 / 0.892; 0.15%, 0.30%, 0.12%; 5, 21, 43
                  (means 0.741 / 5.7 / 0.31% / 0.788 / 0.881; 0.13%, 0.24%, 0.14%; 6, 21, 44)
  with the copies: seed 0 (0.4) 0.736 / 6 / 0.25% / 0.811 / 0.893; 0.09%, 0.21%, 0.06%; 6, 13, 25
                  seed 1 (0.4) 0.764 / 12 / 0.22% / 0.730 / 0.870; 0.09%, 0.27%, 0.09%; 12, 16, 34
                  seed 2 (0.4) 0.805 / 8 / 0.27% / 0.772 / 0.893; 0.15%, 0.33%, 0.19%; 8, 13, 26
                  (means 0.768 / 8.7 / 0.25% / 0.771 / 0.885; 0.11%, 0.27%, 0.11%; 9, 14, 28)
  the shipped net (seed 0 of another machine, 0.4): 0.769 / 5 / 0.28% / 0.758 / 0.872; 0.15%, 0.33%, 0.16%; 5, 19, 35
Declared before: shipped if the choose sets held within the seeds' spread and the CRC threshold images' calls under
JPEG fell. The choose sets held (tb2 +0.03, washed +0.004, the second renderer -0.017, the skin as PNG 3 calls more),
and the skin's calls under JPEG fell by a third (44 -> 28 at q70), but the CRC images' under JPEG did not (0.24% ->
0.27% at q90): the net still reads a JPEG copy as more mast-like, only less so. Not shipped; the README says what JPEG
does to a count. Most of the shift is the chroma subsampling, not the compression: on those CRC nuclei the shipped net's
logits gain 0.57 from a quality-70 copy with Pillow's 4:2:0 chroma and 0.13 with full chroma (4:4:4), 0.40 and 0.04
at quality 90: colour at half resolution spreads a nucleus's hematoxylin over the cytoplasm around it. A lead not
yet tried: the net trained and read on maps split from every image with its chroma at half resolution, so that a
PNG and a scanner's JPEG reach it alike.
That lead, tried (2026-12-07, a new stop; ``--chroma-um 0.5``, not shipped): the net reads its maps with colour detail
finer than 0.5 um blurred (``stain.chroma_blurred``: the concentrations back to light through the reference vectors, the
two colour differences blurred by a Gaussian, split again), in training after the augmentation, in the rule and in the
detector (``MastNet.chroma_um``, in the net's file). Why it might pay beyond JPEG: the development style's tiles are
JPEG 4:2:0 (as are the held-out style's); the same tiles saved at the same quality with full chroma took the shipped
detector's ``washed`` from 0.872 to 0.893 over seeds 8000-8005 (precision 0.80 -> 0.84), and without JPEG 0.886.
Declared before measuring: shipped if, against the three seeds of the shipped recipe above, the JPEG line's skin calls
at q70 and the CRC threshold images' share at q90 both fall on the mean, and every choose set holds within the seeds'
spread. Three seeds, the old finder's positions, each with its rule (all took 0.4), in the columns above:
  seed 0 0.757 / 15 / 0.29% / 0.788 / 0.867; 0.15%, 0.21%, 0.16%; 15, 14, 26
  seed 1 0.757 / 7 / 0.17% / 0.741 / 0.877; 0.12%, 0.06%, 0.03%; 7, 10, 28
  seed 2 0.813 / 12 / 0.35% / 0.748 / 0.893; 0.18%, 0.24%, 0.16%; 12, 20, 30
  (means 0.776 / 11.3 / 0.27% / 0.759 / 0.879; 0.15%, 0.17%, 0.12%; 11, 15, 28)
The JPEG line fell (skin at q70 44 -> 28, the CRC images at q90 0.24% -> 0.17%; the net's logits on the CRC threshold
images' nuclei gain +0.22 from a q90 4:2:0 copy against +0.34, +0.34 at q70 against +0.45, mean of three seeds each),
tb2 gained, washed did not (0.879 against 0.881), but the skin's calls as PNG doubled (5.7 -> 11.3, outside the shipped
recipe's 4-8) and the second renderer lost 0.03: not shipped. A blur of 0.5 um closes only a third of the shift (on the
maps, 4:2:0 against 4:4:4 at quality 90: 0.029 -> 0.020 of hematoxylin and eosin; 8-16 px colour blocks remain), and it
buys it as --real-jpeg did, by reading a PNG more as a JPEG (the skin slide is itself JPEG of quality 30 with RGB
components: no chroma halving to undo there).
A consistency term (2026-12-07, a new stop; ``--consistency 12``, not shipped): AugMix's (Hendrycks et al. 2020) for one
output, each batch augmented twice, independently, the cross-entropy of both plus 12 (the paper's weight; chosen before
anything ran) times the Jensen-Shannon divergence between the two predictions, so that the net's answer cannot rest on
what the stain, cast and focus augmentation changes: the views of an unseen style that disagree (``-O
mast_net_view_margin``) were the last lead. Declared before: three seeds, shipped if on their means washed >= 0.885,
tb2 >= 0.70, the second renderer's seed 0 >= 0.785, skin <= 8 calls, the 50 CRC images <= 0.40%. Seed 0 (the rule took
0.4; the shipped recipe's seed 0 rebuilt on the same machine gave the shipped weights bit for bit) lost on every choose
set (tb2 / skin calls / the 50 CRC images' cells called mast / the second renderer's seed 0 / washed, mean of seeds
8000-8005): 0.649 / 6 / 0.82% / 0.683 / 0.868 against 0.738 / 5 / 0.23% / 0.825 / 0.870; the net alone called 0.17 of
tb2's crops mast at the rule's threshold, against 0.53. Seeds 1 and 2 were not trained: to pass, both would have had to
beat every seed of the shipped recipe on washed (0.894 on average) and on the second renderer (0.836). Training takes
twice as long (6.2 against 3.5 minutes on 2 cores).
The view margin (2026-12-07, night; ``-O mast_net_view_margin``, 0.75 by default since, with the criteria model fitted on
a blurrier camera: bench/calibrate_morphology.py and the README say how it was chosen): the detector holds a mast call
on its views' mean only where every view lies within 0.75 logits of the decision point. The threshold rule here still
reads a net without it (``detected_with`` swaps the trained net into the default detector, and a net's own margin is
none); it was not run again for the change, and the shipped threshold stays 0.4.

The earlier choices, made with the image basis: measured on the
choose sets only (tb2, CRC threshold images, synthetic dev seed 8000 in the training styles and in a
development style drawn for it, never trained on and not the held-out ``faded``): a larger CRC share
bought fewer epithelial calls at the same tb2 fraction; per-crop stain normalisation (each channel
over its 95th percentile) and per-image normalisation at run time made it worse; dropping the small
ccMCT nuclei cut the lymphocytes the net called mast cells in the development style; cross-talk and
chromatin-contrast augmentation gave tb2 0.47 at 0.37% of the CRC threshold images' epithelium (0.42 at
0.74% without); a size augmentation (zoom +-10%) on top of chromatin contrast gave 0.39 at 0.45%.

    python bench/train_mast_net.py [--steps 1500] [--out mastctl/morphology/mast_net.npz] [--two-fold DIR]
    python bench/train_mast_net.py --rethreshold mastctl/morphology/mast_net.npz   # the rule again, no training
    python bench/train_mast_net.py --tiles-scale 0.02 --steps 5 --out /tmp/net.npz     # a smoke test

Needs torch (training only; mastctl runs the net with numpy) and ../shared/data.
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mastctl import imaging, synth
from mastctl.morphology import analyse, measure
from mastctl.morphology import stain as stain_mod
from mastctl.morphology.mastnet import BASES, CROP_MPP, CROP_PX, DEFAULT_VIEWS, MastNet, stain_crops
from mastctl.morphology.mastnet import centre as feature_centre

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "mastctl" / "morphology" / "mast_net.npz"
DATA = ROOT.parent / "shared" / "data"
CCMCT_SCALES = (0.25, 0.35, 0.45)
MIN_AREA_UM2 = 30.0
SMALL_SHARE = 0.4  # the ccMCT positives leave out this smallest share of each crop's nuclei
CCMCT_NEGATIVES = 0.15  # the smallest share of each ccMCT crop's nuclei, with its spindle nuclei: weak negatives
SHEET_NEIGHBOURS = 6  # a ccMCT positive has at least this many nuclei within 20 um (in a sheet, not sparse stroma)
SPINDLE = 2.5  # elongation (major / minor axis) of a spindle nucleus: never a ccMCT positive; a negative with --ccmct-negatives
MARGIN = 4  # crops are cut 8 px larger, for translation jitter
INPUT_POOL = 1  # the net sees 0.5 um/px: at 1 um/px (a quarter of the work) nucleoli, vesicular chromatin and
# cytoplasmic granules blur together, and round carcinoma nuclei pass for mast cells (tb2 0.57 vs 0.62 at equal CRC calls)
GAIN_SD = (0.35, 0.6, 0.35)  # stain strength, log scale, per channel (hematoxylin, eosin, residual): eosin varies most
MIX_SD = 0.2  # stain cross-talk: each crop's channels mixed by I + N(0, MIX_SD) off the diagonal (a stain vector that differs)
FOCUS = (0.8, 1.3)  # the share of batches blurred, and the largest Gaussian sigma (um): scanners and sections differ
CAST_SD = 0.04  # a colour cast: an optical density offset N(0, CAST_SD) per RGB channel, as the net's stain concentrations
DETAIL_SD = 0.3  # chromatin contrast: detail above a 1 um blur scaled by exp(N(0, DETAIL_SD)) per crop
MAX_CALLED = 0.005  # the threshold: at most this share of the OS-1 right half's nuclei called mast by the net
MAX_ADDED = 0.003  # ... and the net adds mast calls to at most this share of the CRC threshold images' cells
WIDTH = 8  # channels of the first level (then 2x, 4x). Width 12 was chosen on the choose sets (seed means over seeds 0-2:
# tb2 0.459 against 0.414, washed 0.775 against 0.734, the CRC threshold images' epithelium 0.30% against 0.40%; width 16
# on seeds 0-1: tb2 0.388) and then failed on the report sets: vb0 0.400 -> 0.385, CRC two-fold 1.96% -> 2.64% of all
# cells (over the 2% bound; epithelium 0.30% -> 0.14%), faded 0.440 -> 0.507. Real tissue first: not shipped
NEIGHBOURS = measure.FEATURE_NAMES.index("neighbours_20um")
FINDER_POSITIONS = True  # also crops at the shipped nucleus finder's nuclei (--seeded-positions-only turns it off): the
# detector asks the net about them too, and the seeds miss most of a dermis's nuclei
MAX_SKIN = 0.15  # ... and the whole detector calls at most this share of the normal skin's choose half mast cells
FINDER_FILE: Path | None = None  # --finder: another finder's nuclei as crop positions (None: the shipped finder)
MIN_DEV_PRECISION = 0.75  # ... and at least this share of its mast calls on the development tiles are mast cells
DEV_TILES, DEV_SEED = 16, 8000  # the development style's tiles (synth.DEV_STYLE, 0.5 um/px; bench/real_tissue.py --choose)
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
BASIS = "reference"  # the stain vectors the net reads every image through (mastnet.BASES; --basis)
OTHER_RENDERER_TILES = 120  # bench/other_renderer.py tiles (seeds [1000, 20, i]) among the synthetic crops
FOURTH_RENDERER_TILES = 120  # bench/fourth_renderer.py tiles (seeds [1000, 40, i]) among them
REAL_JPEG: tuple[int, int] | None = None  # --real-jpeg LO,HI: every real training image also cut from a JPEG copy
CHROMA_UM = 0.0  # --chroma-um: the net reads its maps with colour finer than this blurred (stain.chroma_blurred)
JPEG_QUALITY = (50, 90)  # --synthetic-jpeg: the qualities a training tile may be saved at (a scanner's JPEG: 70-90)


def maps_of(st, basis: str | None = None, chroma_um: float = 0.0) -> np.ndarray:
    """The (3, H, W) maps the net reads, in ``basis`` (None: ``BASIS``); colour finer than ``chroma_um`` blurred."""
    return MastNet([], [], np.zeros((1, 1)), np.zeros(1), basis=basis or BASIS, chroma_um=chroma_um).maps(st)


def as_read(X: np.ndarray) -> np.ndarray:
    """48 px crops (``crops``) as the net reads them: their colour blurred (``CHROMA_UM``), the centre 40 px."""
    if CHROMA_UM > 0:
        X = stain_mod.chroma_blurred(X.astype(np.float32), CHROMA_UM / CROP_MPP)
    return centre(X)


def crops(maps: np.ndarray, mpp: float, xy: np.ndarray) -> np.ndarray:
    """48 x 48 px crops (the 40 px crop and a margin) as float16."""
    return stain_crops(maps, mpp, xy, size=CROP_PX + 2 * MARGIN).astype(np.float16)


def jpeg_crops(pixels: np.ndarray, key: str, mpp: float, xy: np.ndarray) -> np.ndarray:
    """The crops at ``xy`` (working pixels of ``pixels`` split at ``mpp``) of a copy of the image saved as JPEG at a
    quality drawn from ``REAL_JPEG`` for ``key`` (an image's name: the same every run); the copy has the image's size,
    so it splits to the same working pixels."""
    import zlib

    from real_tissue import saved_as_jpeg  # bench/ is the script's folder

    quality = int(np.random.default_rng([77, zlib.crc32(key.encode())]).integers(REAL_JPEG[0], REAL_JPEG[1] + 1))
    st = stain_mod.separate(saved_as_jpeg(pixels, quality), mpp)
    return crops(maps_of(st), st.mpp, xy)


def synthetic_set(workdir: Path, tiles_scale: float = 1.0, jpeg_share: float = 0.0) -> dict:
    """Crops of the synthetic training tiles in ``BASIS``, rendered once (the crops of every basis are cached); with
    ``jpeg_share``, that share of the tiles (drawn per tile) saved as JPEG of a quality in ``JPEG_QUALITY``."""
    suffix = ("" if tiles_scale == 1.0 else f"-x{tiles_scale:g}") + (f"-jpeg{jpeg_share:g}" if jpeg_share else "")

    def cache(basis: str) -> Path:
        return workdir / f"mast-net-synthetic-{'v1' if basis == 'image' else 'v3-' + basis}{suffix}.npz"

    if cache(BASIS).exists():
        with np.load(cache(BASIS)) as z:
            return {k: z[k] for k in z.files}
    plan = [(style, mpp, max(1, round(n * tiles_scale)))
            for style, mpp, n in [("gut", 0.5, 60), ("gut", 0.25, 60), ("sheet", 0.5, 40), ("carcinoma", 0.5, 40)]]
    X, y = {basis: [] for basis in BASES}, []
    for k, (style, mpp, n) in enumerate(plan):
        for i in range(n):
            draw = np.random.default_rng([1000, k, i, 7])
            quality = int(draw.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)) if draw.random() < jpeg_share else None
            tile = synth.render_tile([1000, k, i], synth.SynthOptions(size=512 if mpp >= 0.5 else 1024, mpp=mpp,
                                                                      style=style, jpeg_quality=quality))
            add_tile(tile, mpp, X, y)
        print(f"  synthetic {style} {mpp} um/px: {n} tiles", flush=True)
    return cached(workdir, cache, X, y)


def add_tile(tile, mpp: float, X: dict, y: list) -> None:
    """The crops of a synthetic tile's true cells in every basis (``X[basis]``), and whether each is a mast cell."""
    st = stain_mod.separate(tile.he, mpp)
    xy = np.array([(c.x, c.y) for c in tile.cells], np.float64).reshape(-1, 2) / st.factor
    for basis in BASES:
        X[basis].append(crops(maps_of(st, basis), st.mpp, xy))
    y.append(np.array([c.label == "mast_cell" for c in tile.cells], np.int8))


def cached(workdir: Path, cache, X: dict, y: list) -> dict:
    """Every basis's crops written to its ``cache(basis)`` file; ``BASIS``'s returned."""
    workdir.mkdir(parents=True, exist_ok=True)
    for basis in BASES:
        np.savez(cache(basis), X=np.concatenate(X[basis]), y=np.concatenate(y))
    return {"X": np.concatenate(X[BASIS]), "y": np.concatenate(y)}


def random_style(rng) -> "synth.Style":
    """A synthetic style drawn around the training styles (declared before measuring; not aimed at ``washed`` or
    ``faded``): tissue (crypts, fat, nests, sheets, crowd), stain vectors and strengths, white balance, focus, JPEG
    and the cells' drawing (outline wobble, chromatin, size)."""
    lo_h, lo_e, blur = rng.uniform(0.7, 0.95), rng.uniform(0.5, 0.8), rng.uniform(0.1, 0.5)
    q = int(rng.uniform(60, 85))
    return synth.Style(
        "random", crypts=rng.uniform(0.2, 0.9), fat=rng.uniform(0.1, 0.35),
        nests=rng.uniform(2.0, 6.0) if rng.random() < 0.3 else 0.0, sheet=bool(rng.random() < 0.25),
        crowd=rng.uniform(0.6, 1.4), rot_deg=(rng.uniform(4, 9), rng.uniform(4, 9)), eosin_shift_deg=rng.uniform(-6, 6),
        gains=((lo_h, lo_h + rng.uniform(0.3, 0.5)), (lo_e, lo_e + rng.uniform(0.3, 0.6))),
        cast=None if rng.random() < 0.5 else tuple(rng.uniform(0.92, 1.0, 3)), blur_um=(blur, blur + rng.uniform(0.2, 0.5)),
        jpeg=None if rng.random() < 0.5 else (q, q + 15), wobble=rng.uniform(0.8, 1.8), chromatin=rng.uniform(0.8, 1.5),
        size=rng.uniform(0.92, 1.1))


def tile_set(workdir: Path, name: str, tiles) -> dict:
    """Crops of the true cells of ``tiles`` (an iterable of objects with ``he`` and ``cells``, each cell with ``x``,
    ``y`` and ``label``; 0.5 um/px) in ``BASIS``, cached as ``mast-net-{name}-...npz`` for every basis."""
    def cache(basis: str) -> Path:
        return workdir / f"mast-net-{name}-{'v1' if basis == 'image' else 'v3-' + basis}.npz"

    if cache(BASIS).exists():
        with np.load(cache(BASIS)) as z:
            return {k: z[k] for k in z.files}
    X, y, count = {basis: [] for basis in BASES}, [], 0
    for count, tile in enumerate(tiles, 1):
        add_tile(tile, 0.5, X, y)
    print(f"  {name}: {count} tiles", flush=True)
    return cached(workdir, cache, X, y)


def random_style_set(workdir: Path, n: int) -> dict:
    """Crops of ``n`` tiles of randomly drawn styles (``random_style``; seeds [1000, 10, i]) in ``BASIS``, cached."""
    def tiles():
        for i in range(n):
            name = f"_random_{i}"
            synth.STYLES[name] = random_style(np.random.default_rng([1000, 10, i]))  # the renderer looks it up by name
            try:
                yield synth.render_tile([1000, 10, i], synth.SynthOptions(size=512, mpp=0.5, style=name))
            finally:
                del synth.STYLES[name]

    return tile_set(workdir, f"random-styles-{n}", tiles())


def renderer_set(workdir: Path, n: int, renderer: str, stream: int) -> dict:
    """Crops of ``n`` tiles of a bench renderer (``bench/{renderer}.py``; seeds [1000, stream, i], 0.5 um/px) in
    ``BASIS``, cached."""
    import importlib
    from types import SimpleNamespace

    module = importlib.import_module(renderer)

    def tiles():
        for i in range(n):
            rgb, cells = module.render([1000, stream, i])
            yield SimpleNamespace(he=rgb, cells=[SimpleNamespace(x=c["x"], y=c["y"], label=c["label"]) for c in cells])

    return tile_set(workdir, f"{renderer.replace('_', '-')}-v{module.VERSION}-{n}", tiles())


def annotation_ink(rgb: np.ndarray) -> np.ndarray:
    """The boxes and labels drawn on the ccMCT crops (orange, yellow, red, salmon lines; grey mosaic fill)."""
    from scipy import ndimage as ndi

    a = rgb.astype(np.int16)
    sat = a.max(2) - a.min(2)
    orange = (a[..., 2] < a[..., 1] - 25) & (a[..., 0] > 170)
    strong = sat > 70
    same_h = np.abs(np.diff(a, axis=1, prepend=a[:, :1])).sum(2) < 30
    same_v = np.abs(np.diff(a, axis=0, prepend=a[:1])).sum(2) < 30
    h = (ndi.uniform_filter1d(strong.astype(np.float32), 15, axis=1) > 0.99) & \
        (ndi.uniform_filter1d(same_h.astype(np.float32), 15, axis=1) > 0.95)
    v = (ndi.uniform_filter1d(strong.astype(np.float32), 15, axis=0) > 0.99) & \
        (ndi.uniform_filter1d(same_v.astype(np.float32), 15, axis=0) > 0.95)
    grey = ndi.binary_opening((sat < 6) & (a[..., 0] > 95) & (a[..., 0] < 135), iterations=2)
    return ndi.binary_dilation(orange | h | v | grey, iterations=6)


@functools.cache
def finder():
    """The nucleus finder whose nuclei are crop positions when ``FINDER_POSITIONS`` (``FINDER_FILE``, else the shipped
    one), else None; loaded once (``main`` sets both before the crops are cut)."""
    if not FINDER_POSITIONS:
        return None
    from mastctl.morphology.nucleinet import NucleusNet, default_net

    return NucleusNet.load(FINDER_FILE) if FINDER_FILE else default_net()


def found_near(a, xy: np.ndarray, um: float = 4.0) -> np.ndarray:
    """The finder's nuclei of ``a`` each within ``um`` of one of ``xy`` (working pixels): the same cells, at the
    finder's centres."""
    if a.found is None or not len(a.found) or not len(xy):
        return np.zeros((0, 2))
    from scipy.spatial import cKDTree

    d = cKDTree(xy).query(a.found, k=1)[0] * a.stained.mpp
    return a.found[d <= um]


def ccmct_set(patterns: tuple[str, ...], scales=CCMCT_SCALES, negatives: float = 0.0, jpeg: bool = False) -> dict:
    """Weak positives of the crops (``patterns``); with ``negatives`` > 0 also weak negatives from the same slides: the
    smallest ``negatives`` share of each crop's nuclei (lymphocytes, granulocytes) and its spindle nuclei (elongation
    of at least SPINDLE: fibroblasts, endothelium), so that what tells a mast cell from another cell is not what tells
    this laboratory's slides from the others'."""
    X, N, found = [], [], finder()
    for f in sorted(p for pattern in patterns for p in glob.glob(str(DATA / "ccmct" / pattern))):
        pixels = imaging.load(f).pixels
        ink = annotation_ink(pixels)
        for mpp in scales:
            a = analyse(pixels, mpp, nuclei_net=found)
            if not len(a.X):
                continue
            r = np.clip(a.xy[:, 1].astype(int), 0, ink.shape[0] - 1)
            c = np.clip(a.xy[:, 0].astype(int), 0, ink.shape[1] - 1)
            # the smallest nuclei of a sheet are mostly lymphocytes and granulocytes: at a wrong assumed scale the
            # area in um^2 lets them through, so also drop the smaller part of the crop's own nuclei (scale-free)
            keep = ~ink[r, c] & (a.X[:, 0] >= MIN_AREA_UM2) & (a.X[:, 0] >= np.quantile(a.X[:, 0], SMALL_SHARE))
            keep &= a.X[:, 1] < SPINDLE if negatives > 0 else True
            keep &= a.X[:, NEIGHBOURS] >= SHEET_NEIGHBOURS  # the weak label holds in a sheet, not in the crop's stroma
            maps = maps_of(a.stained)
            positive = [a.nuclei.xy[keep]] + ([found_near(a, a.nuclei.xy[keep])] if found is not None else [])
            X.extend(crops(maps, a.stained.mpp, xy) for xy in positive)
            if jpeg:
                X.extend(jpeg_crops(pixels, f"{f}@{mpp}", mpp, xy) for xy in positive)
            if negatives > 0:
                other = ~ink[r, c] & ((a.X[:, 0] <= np.quantile(a.X[:, 0], negatives)) | (a.X[:, 1] >= SPINDLE))
                N.append(crops(maps, a.stained.mpp, a.nuclei.xy[other]))
                if jpeg:
                    N.append(jpeg_crops(pixels, f"{f}@{mpp}", mpp, a.nuclei.xy[other]))
    X = np.concatenate(X + N)
    y = np.zeros(len(X), np.int8)
    y[: len(X) - sum(len(n) for n in N)] = 1
    return {"X": X, "y": y}


def crc_set() -> dict:
    folder = DATA / "crc_nuclei"
    truth: dict[str, list] = {}
    epithelial: dict[str, list] = {}
    with open(folder / "points.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["class"] in ("detection", "epithelial"):
                (truth if r["class"] == "detection" else epithelial).setdefault(r["image"], []).append((float(r["x"]), float(r["y"])))
    from nuclei_cv import crc_halves  # bench/ is the script's folder
    from real_tissue import is_threshold_image

    _, halves = crc_halves(folder)  # as bench/real_tissue.py scores them
    X, half, inner, held_images = [], [], [], []
    for k, paths in enumerate(halves):
        for j, p in enumerate(paths):
            pixels = imaging.load(p, mpp=0.55).pixels
            a = analyse(pixels, 0.55)
            st = a.stained
            held = is_threshold_image(j)  # every fifth image of a half: the threshold's, not trained on
            if held:  # what the detector makes of it, for the threshold
                held_images.append(threshold_image(k, a, np.array(epithelial.get(p.stem, []), np.float64).reshape(-1, 2)))
            marked = np.array(truth.get(p.stem, []), np.float64).reshape(-1, 2) / st.factor
            # the marked centres, and every region the detector's own nucleus finder takes for a nucleus
            # (fragments, stroma, off-centre seeds): what the net is asked about at run time
            for xy in (marked, a.nuclei.xy):
                cut = [crops(maps_of(st), st.mpp, xy)]
                if REAL_JPEG is not None and not held:  # a JPEG copy of a training image: the same cells, as scanned
                    cut.append(jpeg_crops(pixels, p.stem, 0.55, xy))
                for c in cut:
                    X.append(c)
                    half.append(np.full(len(xy), k))
                    inner.append(np.full(len(xy), held))
    X = np.concatenate(X)
    return {"X": X, "y": np.zeros(len(X), np.int8), "half": np.concatenate(half), "inner": np.concatenate(inner),
            "held_images": held_images}


@dataclass
class ThresholdImage:
    """A CRC image kept out of training for the threshold: the detector's analysis, every nucleus's crop, and the
    cells the criteria model calls mast on its own."""

    half: int
    analysis: object  # mastctl.morphology.Analysis
    crops: np.ndarray  # (nuclei, 3, 40, 40) float16
    epithelial: np.ndarray  # (n, 2) marked epithelial centres, image pixels
    criteria_mast: frozenset  # (x, y) of the cells the criteria model alone calls mast


def threshold_image(half: int, a, epithelial: np.ndarray) -> ThresholdImage:
    from mastctl.morphology import classify, default_model

    st = a.stained
    maps = maps_of(st, chroma_um=CHROMA_UM)
    return ThresholdImage(half, a, stain_crops(maps, st.mpp, a.nuclei.xy).astype(np.float16), epithelial,
                          frozenset((c.x, c.y) for c in classify(a, default_model()) if c.is_mast_cell))


def added_by_the_net(images: list[ThresholdImage], logits: list[np.ndarray], threshold: float) -> tuple[float, float]:
    """The shares of the images' cells, and of their marked epithelial nuclei, that the default detector calls mast
    with a net of these ``logits`` (one array per image, unshifted) at ``threshold`` and would not call mast without
    it (the criteria model's own calls left out)."""
    from mastctl.metrics import match
    from mastctl.morphology import classify, default_model

    model, shift = default_model(), float(np.log(threshold / (1 - threshold)))
    added = cells_seen = epithelial_added = marked = 0
    for im, z in zip(images, logits, strict=True):
        both = classify(im.analysis, model, p_net=1.0 / (1.0 + np.exp(-np.clip(z - shift, -30, 30))))
        xy = np.array([(c.x, c.y) for c in both]).reshape(-1, 2)
        new = np.array([c.is_mast_cell and (c.x, c.y) not in im.criteria_mast for c in both], bool)
        added, cells_seen = added + int(new.sum()), cells_seen + len(both)
        epithelial_added += sum(int(new[i]) for i, _ in match(xy, im.epithelial, 6.0).pairs)
        marked += len(im.epithelial)
    return added / max(1, cells_seen), epithelial_added / max(1, marked)


@functools.cache
def default_detector():
    """The default morphology detector, made once (its models read from disk once)."""
    from mastctl import registry
    from mastctl.profile import Profile

    return registry.create("detector", "morphology", Profile())


def detected_with(image: imaging.Image, net: MastNet, threshold: float) -> list:
    """``image``'s cells as the default detector (nucleus finder, criteria, this net and the sheet rule, as ``mastctl
    detect`` runs them) classifies them with ``net`` deciding at ``threshold``."""
    detector = default_detector()
    detector.mast_net, shift = net, net.logit_shift
    net.logit_shift = float(np.log(threshold / (1 - threshold)))
    try:
        return list(detector.detect(image).cells)
    finally:
        net.logit_shift = shift


def called_by_the_detector(image: imaging.Image, net: MastNet, threshold: float) -> float:
    """The share of ``image``'s cells the default detector calls mast cells with ``net`` deciding at ``threshold``."""
    cells = detected_with(image, net, threshold)
    return sum(c.is_mast_cell for c in cells) / max(1, len(cells))


@functools.cache
def development_tiles(workdir: Path) -> list:
    """(image, true cells) of the development style's tiles (rendered once, read once)."""
    from real_tissue import synthetic_folder

    from mastctl.truth import image_key, load_truth

    folder = synthetic_folder(workdir, DEV_TILES, synth.DEV_STYLE, DEV_SEED)
    truth = load_truth(folder)
    return [(imaging.load(path), truth[image_key(path)].cells) for path in sorted(folder.glob("*_he.png"))]


def development_precision(workdir: Path, net: MastNet, threshold: float) -> float:
    """The share of the default detector's mast calls (``net`` deciding at ``threshold``) on the development style's
    tiles that are mast cells (within 5 um of one, one to one), as bench/real_tissue.py --choose scores them."""
    from mastctl.metrics import score_image

    right = calls = 0
    for image, true_cells in development_tiles(workdir):
        scored = score_image(image.path, detected_with(image, net, threshold), true_cells, 5.0 / image.mpp, mode="mast")
        right, calls = right + scored.detection.tp, calls + scored.pred_count
    return right / max(1, calls)


def other_he_set(skin: bool = True) -> dict:
    """Every nucleus the detector finds in more H&E sources with no mast cell tumour: negatives.

    OS-1 (an OpenSlide test carcinoma, OME scale 0.227 um/px): its left half TRAIN, its right half CHOOSE
    (the threshold); the same-section H&E tile of ``pairs/`` (about 40x: 0.25 um/px): TRAIN; with ``skin``, the
    normal skin of ``wsi/cmu_small_region.svs`` (0.499 um/px; epidermis and dermis: the stroma a cutaneous mast cell
    tumour grows in, whose fibroblasts and vessels the ccMCT positives are easily confused with; normal dermis holds
    a few real mast cells, so these are weak negatives like CRC's): its top half TRAIN, its bottom half CHOOSE.
    """
    from real_tissue import SKIN, skin_choose_half  # bench/ is the script's folder: the one place the halves are cut

    sources = [(DATA / "openslide_crops" / "images-OS-1-detail.ome.tif", None, "columns"),
               (DATA / "pairs" / "same_section_he_ki67" / "he.png", 0.25, None)]
    if skin:
        sources.append((SKIN, None, "top"))
    X, choose, found = [], [], finder()
    for path, mpp, split in sources:
        if not path.exists():
            continue
        image = imaging.load(path, mpp=mpp)
        pixels = image.pixels[:, :, :3]
        h, w = pixels.shape[:2]
        parts = {"columns": [(pixels[:, : w // 2], False), (pixels[:, w // 2:], True)],
                 "top": [(pixels[: h // 2], False)], None: [(pixels, False)]}[split]
        for part, held in parts:
            a = analyse(np.ascontiguousarray(part), image.mpp, nuclei_net=found)
            xy = a.nuclei.xy if a.found is None else np.concatenate([a.nuclei.xy, a.found])
            X.append(crops(maps_of(a.stained), a.stained.mpp, xy))
            choose.append(np.full(len(X[-1]), held))
            if REAL_JPEG is not None and not held:
                X.append(jpeg_crops(part, f"{path.name}@{split}", image.mpp, xy))
                choose.append(np.full(len(xy), False))
    skin_image = skin_choose_half() if skin else None  # the whole detector is run on it (the threshold)
    if not X:
        return {"X": np.zeros((0, 3, CROP_PX + 2 * MARGIN, CROP_PX + 2 * MARGIN), np.float16), "y": np.zeros(0, np.int8),
                "choose": np.zeros(0, bool), "skin_image": skin_image}
    X = np.concatenate(X)
    return {"X": X, "y": np.zeros(len(X), np.int8), "choose": np.concatenate(choose), "skin_image": skin_image}


# --------------------------------------------------------------------------- training (torch)


def make_torch_net(width: int):
    import torch

    nn = torch.nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    c = width

    class Net(nn.Module):
        """40 px at 0.5 um/px (averaged over INPUT_POOL first); three levels of two convolutions; the features are
        the means over the last level and over its centre."""

        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.AvgPool2d(INPUT_POOL), block(3, c), block(c, c), nn.MaxPool2d(2),
                                   block(c, 2 * c), block(2 * c, 2 * c), nn.MaxPool2d(2),
                                   block(2 * c, 4 * c), block(4 * c, 4 * c))
            self.head = nn.Linear(8 * c, 1)

        def forward(self, x):
            h = self.f(x)
            c = feature_centre(h.shape[2])
            return self.head(torch.cat([h.mean((2, 3)), h[:, :, c, c].mean((2, 3))], 1))[:, 0]

    return Net()


def augment(x: np.ndarray, rng) -> np.ndarray:
    """Stain strength (per crop and channel, +-35%), offsets, stain cross-talk (MIX_SD: the image's stain
    vectors are estimates), chromatin contrast (DETAIL_SD), noise, focus (a Gaussian of 0-1 um on half the
    batches: scanners and sections differ in sharpness), translation, flips and quarter turns."""
    from scipy import ndimage as ndi

    n = len(x)
    gain_sd = np.asarray(GAIN_SD, np.float32).reshape(-1, 1, 1) * np.ones((3, 1, 1), np.float32)
    x = x * np.exp(rng.normal(0, 1, (n, 3, 1, 1)) * gain_sd).astype(np.float32) + rng.normal(0, 0.05, (n, 3, 1, 1)).astype(np.float32)
    if CAST_SD > 0 and BASIS == "reference":  # a colour cast the image's own correction left: one OD offset per crop
        from mastctl.stains import REFERENCE_HE, stain_matrix

        to_conc = np.linalg.inv(stain_matrix(*REFERENCE_HE)).astype(np.float32)
        x = x + (rng.normal(0, CAST_SD, (n, 3)).astype(np.float32) @ to_conc)[:, :, None, None]
    if MIX_SD > 0:
        mixing = np.eye(3, dtype=np.float32) + (rng.normal(0, MIX_SD, (n, 3, 3)) * (1 - np.eye(3))).astype(np.float32)
        x = np.einsum("nij,njhw->nihw", mixing, x.astype(np.float32))
    if DETAIL_SD > 0:
        low = ndi.gaussian_filter(x.astype(np.float32), (0, 0, 2.0, 2.0), mode="nearest")
        x = low + (x - low) * np.exp(rng.normal(0, DETAIL_SD, (n, 1, 1, 1))).astype(np.float32)
    if rng.random() < FOCUS[0]:
        sigma_px = rng.uniform(0.0, FOCUS[1]) / 0.5  # crops are at 0.5 um/px
        x = ndi.gaussian_filter(x.astype(np.float32), (0, 0, sigma_px, sigma_px), mode="nearest")
    x = x + rng.normal(0, 0.04, x.shape).astype(np.float32)
    if CHROMA_UM > 0:  # last, as the detector reads an image: whatever the stains and the camera did, then the colour
        x = stain_mod.chroma_blurred(x, CHROMA_UM / CROP_MPP)
    i, j = rng.integers(0, 2 * MARGIN + 1, 2)
    x = x[:, :, i:i + CROP_PX, j:j + CROP_PX]
    if rng.random() < 0.5:
        x = x[:, :, :, ::-1]
    return np.ascontiguousarray(np.rot90(x, rng.integers(4), axes=(2, 3)), dtype=np.float32)


def jensen_shannon(logits_a, logits_b):
    """The mean Jensen-Shannon divergence between the Bernoulli predictions of two logits (nats; AugMix's consistency,
    Hendrycks et al. 2020, for one output)."""
    import torch

    def bernoulli(z):
        return torch.stack([torch.sigmoid(z), torch.sigmoid(-z)], -1).clamp_min(1e-7)

    p, q = bernoulli(logits_a), bernoulli(logits_b)
    m = (p + q) / 2
    return ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)).mean() / 2


def train(sources: list[tuple[np.ndarray, np.ndarray]], mix: list[float], steps: int, width: int, seed: int = 0,
          consistency: float = 0.0):
    """``consistency`` > 0: each batch is augmented twice, independently, the loss is the cross-entropy of both plus
    ``consistency`` times the Jensen-Shannon divergence between the two predictions (``jensen_shannon``)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = make_torch_net(width)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    t0 = time.perf_counter()
    for step in range(steps):
        net.train()
        xs, ys = [], []
        for (X, y), n in zip(sources, rng.multinomial(96, mix)):
            idx = rng.integers(0, len(X), n)
            xs.append(X[idx].astype(np.float32))
            ys.append(y[idx])
        batch, target = np.concatenate(xs), torch.from_numpy(np.concatenate(ys).astype(np.float32))
        if consistency > 0:
            both = net(torch.from_numpy(np.concatenate([augment(batch, rng), augment(batch, rng)])))
            a_, b_ = both[:len(batch)], both[len(batch):]
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(both, torch.cat([target, target]))
                    + consistency * jensen_shannon(a_, b_))
        else:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(torch.from_numpy(augment(batch, rng))), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"    step {step} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return net.eval()


def export(net, info: dict) -> MastNet:
    """The torch net as numpy arrays, batch norm folded into each convolution."""
    convs, pool_after = [], []
    for layer in net.f:
        if layer.__class__.__name__ == "AvgPool2d":
            continue
        if layer.__class__.__name__ == "MaxPool2d":
            pool_after.append(len(convs) - 1)
            continue
        conv, bn = layer[0], layer[1]
        scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
        w = conv.weight.detach().numpy() * scale[:, None, None, None]
        b = (conv.bias.detach().numpy() - bn.running_mean.numpy()) * scale + bn.bias.detach().numpy()
        convs.append((w.astype(np.float32), b.astype(np.float32)))
    return MastNet(convs, pool_after, net.head.weight.detach().numpy(), net.head.bias.detach().numpy(), 0.0, info,
                   input_pool=INPUT_POOL, basis=BASIS, chroma_um=CHROMA_UM)


def centre(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(X[:, :, MARGIN:MARGIN + CROP_PX, MARGIN:MARGIN + CROP_PX].astype(np.float32))


@dataclass
class Rule:
    """The threshold the rule took (``choose_threshold``) and what it saw there."""

    threshold: float
    added: float  # the share of the CRC threshold images' cells the net adds mast calls to
    epithelial: float  # ... of their marked epithelial nuclei
    os1: float | None  # the share of the OS-1 right half's nuclei the net calls mast
    skin: float | None  # the share of the normal skin's choose half the whole detector calls mast
    dev_precision: float | None  # the share of the whole detector's mast calls on the development tiles that are right
    tb2: float  # the share of the ccMCT tb2 crops the net calls mast

    def chosen_on(self) -> dict:
        return {"crc_held_out_images_cells_the_net_adds": round(self.added, 4),
                "crc_held_out_images_epithelial_the_net_adds": round(self.epithelial, 4),
                "os1_right_half_called_mast": None if self.os1 is None else round(self.os1, 4),
                "skin_choose_half_called_mast_by_the_detector": None if self.skin is None else round(self.skin, 4),
                "development_style_mast_precision": (None if self.dev_precision is None
                                                     else round(self.dev_precision, 4)),
                "ccmct_tb2_mast_fraction": round(self.tb2, 4)}

    def __str__(self) -> str:
        return (f"threshold {self.threshold} (of the cells of the CRC images held out for it, the net adds mast "
                f"calls to {self.added:.2%}, to {self.epithelial:.2%} of the epithelial; the detector calls "
                f"{'-' if self.skin is None else f'{self.skin:.2%}'} of the normal skin's cells mast, "
                f"{'-' if self.dev_precision is None else f'{self.dev_precision:.1%}'} of its calls on the "
                f"{synth.DEV_STYLE} tiles right; ccMCT tb2 crops {self.tb2:.3f})")


def choose_threshold(net: MastNet, held_images: list, other: dict, choose: dict, a) -> Rule:
    """The declared rule (the docstring's "Threshold"): the lowest of THRESHOLDS at which every bound holds, for ``net``
    (its logit shift 0) as the default detector reads it (its ``views``)."""
    p_other = net.probability(as_read(other["X"][other["choose"]])) if other["choose"].any() else np.zeros(0)
    held_logits = [net.logits(im.crops.astype(np.float32)) for im in held_images]  # the shift is 0 until chosen
    skin = other["skin_image"]
    bound = a.max_skin >= 0 and skin is not None
    for threshold in THRESHOLDS:  # (the whole detector is asked only where it may decide)
        added, epithelial = added_by_the_net(held_images, held_logits, threshold)
        passes = added <= MAX_ADDED and (not len(p_other) or np.mean(p_other >= threshold) <= MAX_CALLED)
        skin_share = called_by_the_detector(skin, net, threshold) if passes and bound else None
        passes = passes and (not bound or skin_share <= a.max_skin)
        dev_precision = development_precision(a.workdir, net, threshold) if passes and a.min_dev_precision > 0 else None
        if passes and (dev_precision is None or dev_precision >= a.min_dev_precision):
            break
    if skin is not None and skin_share is None:
        skin_share = called_by_the_detector(skin, net, threshold)
    os1 = float(np.mean(p_other >= threshold)) if len(p_other) else None
    tb2 = float(np.mean(net.probability(as_read(choose["X"])) >= threshold))
    return Rule(threshold, added, epithelial, os1, skin_share, dev_precision, tb2)


def rethreshold(path: Path, out: Path, a) -> int:
    """Run the rule again on a shipped net's weights (``--rethreshold``), as the detector now reads it, and write the
    net with the threshold it takes: the weights are untouched."""
    global CHROMA_UM
    net = MastNet.load(path)
    before, CHROMA_UM = net.info.get("threshold"), net.chroma_um
    net.logit_shift, net.views = 0.0, DEFAULT_VIEWS
    crc, other, choose = crc_set(), other_he_set(skin=not a.no_skin), ccmct_set(("tb2_*.png",))
    rule = choose_threshold(net, list(crc["held_images"]), other, choose, a)
    net.logit_shift = float(np.log(rule.threshold / (1 - rule.threshold)))
    net.info = {**net.info, "threshold": rule.threshold, "views": net.views, "chosen_on": rule.chosen_on()}
    net.save(out)
    print(f"{path.name}: {rule} (before {before}); wrote {out}", flush=True)
    return 0


def main() -> int:
    global BASIS, GAIN_SD, MIX_SD, CAST_SD, FOCUS, FINDER_POSITIONS, FINDER_FILE, REAL_JPEG, CHROMA_UM
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--two-fold", type=Path, default=None, help="also DIR/crc-fold0.npz and crc-fold1.npz")
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "mastctl" / "bench")
    ap.add_argument("--mix", default="0.35,0.15,0.4,0.1",
                    help="batch shares: synthetic, ccMCT, CRC, other H&E (the last dropped where that data is absent)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiles-scale", type=float, default=1.0, help="multiply the synthetic tile counts (smoke tests)")
    ap.add_argument("--basis", choices=BASES, default="reference", help="the stain vectors the net reads images through")
    ap.add_argument("--gain-sd", default=None, help="stain-strength augmentation SD (log scale), one value or H,E,R")
    ap.add_argument("--mix-sd", type=float, default=None, help="stain cross-talk augmentation SD")
    ap.add_argument("--finder", type=Path, default=None,
                    help="crops at this finder's nuclei (default: the shipped one; the docstring: the shipped net's)")
    ap.add_argument("--seeded-positions-only", action="store_true",
                    help="crops at the seeded nuclei only, not also at the shipped nucleus finder's (the recipe before 2026-12-05)")
    ap.add_argument("--max-skin", type=float, default=MAX_SKIN,
                    help="the threshold rule also asks that the detector call at most this share of the normal skin's "
                         "choose half mast cells (a negative value: measured and recorded, not a bound)")
    ap.add_argument("--min-dev-precision", type=float, default=MIN_DEV_PRECISION,
                    help="the threshold rule also asks that at least this share of the detector's mast calls on the "
                         "development style's tiles be mast cells (0: no such bound)")
    ap.add_argument("--no-skin", action="store_true", help="leave the normal skin of wsi/ out of the negatives")
    ap.add_argument("--synthetic-jpeg", type=float, default=0.0,
                    help="this share of the synthetic training tiles saved as JPEG (quality %d-%d) before cropping"
                         % JPEG_QUALITY)
    ap.add_argument("--real-jpeg", default=None, metavar="LO,HI",
                    help="every real training image (ccMCT tb0/tb1, CRC, OS-1, pairs/, skin) also cut from a copy "
                         "saved as JPEG at a quality drawn per image from LO-HI (not the threshold's or choose sets')")
    ap.add_argument("--chroma-um", type=float, default=CHROMA_UM,
                    help="the net reads its maps with colour detail finer than this (um) blurred, in training and "
                         "in the detector (stain.chroma_blurred: a PNG then reaches it as a scanner's JPEG does; 0: "
                         "not)")
    ap.add_argument("--random-styles", type=int, default=0, help="also this many synthetic tiles of randomly drawn styles")
    ap.add_argument("--fourth-renderer", type=int, default=FOURTH_RENDERER_TILES,
                    help="tiles of bench/fourth_renderer.py (seeds [1000, 40, i]) among the synthetic crops (0: none, "
                         "as before a stop on 2026-12-07)")
    ap.add_argument("--other-renderer", type=int, default=OTHER_RENDERER_TILES,
                    help="tiles of bench/other_renderer.py among the synthetic crops (0: none, as before 2026-12-07)")
    ap.add_argument("--focus", default=None, help="focus augmentation: SHARE,MAX_UM (share of batches blurred, largest sigma)")
    ap.add_argument("--cast-sd", type=float, default=None, help="colour-cast augmentation SD (optical density)")
    ap.add_argument("--ccmct-negatives", type=float, default=CCMCT_NEGATIVES,
                    help="also the smallest share of each ccMCT crop's nuclei, and its spindle nuclei, as negatives")
    ap.add_argument("--consistency", type=float, default=0.0,
                    help="augment each batch twice and add this weight times the Jensen-Shannon divergence between the "
                         "two predictions to the loss (AugMix's consistency; 0: one augmentation, as shipped)")
    ap.add_argument("--rethreshold", type=Path, default=None, metavar="NET",
                    help="train nothing: run the threshold rule again on NET (a net of the whole CRC, as shipped) as "
                         "the detector now reads it, and write it with the threshold taken to --out")
    a = ap.parse_args()
    BASIS, FINDER_POSITIONS, FINDER_FILE, CHROMA_UM = a.basis, not a.seeded_positions_only, a.finder, a.chroma_um
    if CHROMA_UM > 0 and BASIS != "reference":
        ap.error("--chroma-um needs --basis reference")
    if a.gain_sd:
        GAIN_SD = tuple(float(v) for v in a.gain_sd.split(","))
    if a.mix_sd is not None:
        MIX_SD = a.mix_sd
    if a.cast_sd is not None:
        CAST_SD = a.cast_sd
    if a.focus:
        FOCUS = tuple(float(v) for v in a.focus.split(","))
    if a.real_jpeg:
        REAL_JPEG = tuple(int(v) for v in a.real_jpeg.split(","))
    if not (DATA / "ccmct").exists() or not (DATA / "crc_nuclei").exists():
        ap.error(f"needs {DATA / 'ccmct'} and {DATA / 'crc_nuclei'}")
    if a.rethreshold is not None:
        return rethreshold(a.rethreshold, a.out, a)
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    syn = synthetic_set(a.workdir, a.tiles_scale, a.synthetic_jpeg)
    # other renderers' tiles among the synthetic crops: (module, seed stream, tiles), scaled as the synthetic tiles are
    renderers = [(name, stream, max(1, round(n * a.tiles_scale))) for name, stream, n in
                 (("other_renderer", 20, a.other_renderer), ("fourth_renderer", 40, a.fourth_renderer)) if n]
    extras = ([random_style_set(a.workdir, a.random_styles)] if a.random_styles else []) + [
        renderer_set(a.workdir, n, name, stream) for name, stream, n in renderers]
    if extras:
        syn = {k: np.concatenate([syn[k]] + [extra[k] for extra in extras]) for k in ("X", "y")}
    mct = ccmct_set(("tb0_*.png", "tb1_*.png"), negatives=a.ccmct_negatives, jpeg=REAL_JPEG is not None)
    choose = ccmct_set(("tb2_*.png",))
    crc, other = crc_set(), other_he_set(skin=not a.no_skin)
    print(f"crops: synthetic {len(syn['X'])} ({int(syn['y'].sum())} mast), ccMCT train {len(mct['X'])} ({int(mct['y'].sum())} positive), "
          f"ccMCT choose {len(choose['X'])}, CRC {len(crc['X'])}, other H&E {len(other['X'])} "
          f"({int(other['choose'].sum())} to choose on); {time.perf_counter() - t0:.0f} s", flush=True)
    other_train = other["X"][~other["choose"]]
    plans = [(a.out, None)]
    if a.two_fold:
        a.two_fold.mkdir(parents=True, exist_ok=True)
        plans = [(a.two_fold / f"crc-fold{k}.npz", k) for k in (0, 1)] + plans
    for out, left_out in plans:
        usable = np.ones(len(crc["X"]), bool) if left_out is None else crc["half"] != left_out
        rows = usable & ~crc["inner"]
        print(f"{out.name}: training{'' if left_out is None else f' (CRC half {left_out} left out)'}", flush=True)
        sources = [(syn["X"], syn["y"]), (mct["X"], mct["y"]), (crc["X"][rows], crc["y"][rows])]
        mix = [float(v) for v in a.mix.split(",")]
        if len(other_train):
            sources.append((other_train, np.zeros(len(other_train), np.int8)))
        mix = mix[:len(sources)]
        torch_net = train(sources, [m / sum(mix) for m in mix], a.steps, a.width, a.seed, a.consistency)
        net = export(torch_net, {})
        net.views = DEFAULT_VIEWS  # as the default detector reads it (turns and flips near the decision point; the
        # rule's CRC and OS-1 logits are read with the shift at 0, so "near" is within VIEW_GATE of P 0.5 there)
        held_images = [im for im in crc["held_images"] if left_out is None or im.half != left_out]
        rule = choose_threshold(net, held_images, other, choose, a)
        net.logit_shift = float(np.log(rule.threshold / (1 - rule.threshold)))
        net.info = {"trained_on": "synthetic tiles (seeds 1000+, styles gut, sheet, carcinoma)"
                                  + "".join(f"; {n} tiles of bench/{name}.py (seeds [1000, {stream}, i])"
                                            for name, stream, n in renderers)
                                  + "; ccMCT tb0/tb1 crops "
                                  f"(Bertram et al. 2019; weak positives, nuclei >= {MIN_AREA_UM2:g} um^2 at "
                                  f"{CCMCT_SCALES} um/px, in sheets of >= {SHEET_NEIGHBOURS} nuclei within 20 um"
                                  + (f"; weak negatives, each crop's smallest {a.ccmct_negatives:g} and its spindle nuclei"
                                     if a.ccmct_negatives > 0 else "") + "); CRCHistoPhenotypes nuclei (Sirinukunwattana et al. 2016; "
                                  f"negatives{'' if left_out is None else f', half {left_out} left out'}); OS-1 left half, the same-section "
                                  "H&E of pairs/" + ("" if a.no_skin else " and the top half of the normal skin of wsi/cmu_small_region.svs")
                                  + " (negatives" + (", at the seeded and the nucleus finder's nuclei)" if FINDER_POSITIONS else ")"),
                    "threshold": rule.threshold, "views": net.views, "steps": a.steps, "width": a.width, "basis": BASIS,
                    "finder_positions": FINDER_POSITIONS, "chroma_um": CHROMA_UM,
                    "augmentation": {"gain_sd": list(np.atleast_1d(GAIN_SD).astype(float)), "mix_sd": MIX_SD,
                                     "cast_sd": CAST_SD, "focus": list(FOCUS), "detail_sd": DETAIL_SD},
                    "chosen_on": rule.chosen_on()}
        if a.consistency > 0:
            net.info["consistency"] = a.consistency
        net.save(out)
        print(f"  {rule}; wrote {out} ({out.stat().st_size // 1024} kB); {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

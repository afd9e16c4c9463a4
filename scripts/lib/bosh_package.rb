# frozen_string_literal: true

# The file set `bosh create-release` packs for a package: every `files` glob is matched relative
# to src/ and to blobs/ (a hit in either counts; `**/*` includes dot-files), a glob that matches
# nothing is an error, `excluded_files` are removed, and matched files keep their relative path.
#
#   ruby scripts/lib/bosh_package.rb <release dir> <package> <blobs dir> [<stage dir>]
#
# Prints the matched paths; with <stage dir>, copies them there (mtimes preserved), as the
# Director unpacks a source package into the compile directory.

require 'fileutils'
require 'yaml'

module BoshPackage
  class MissingFiles < StandardError; end

  FLAGS = File::FNM_DOTMATCH | File::FNM_PATHNAME

  def self.spec(release_dir, name)
    YAML.safe_load(File.read(File.join(release_dir, 'packages', name, 'spec')))
  end

  # { relative path => absolute source } for the package's files.
  def self.files(release_dir, name, blobs_dir)
    spec = spec(release_dir, name)
    roots = [File.join(release_dir, 'src'), blobs_dir]
    matched = {}
    (spec['files'] || []).each do |pattern|
      hits = roots.flat_map do |root|
        next [] unless File.directory?(root)

        Dir.glob(pattern, FLAGS, base: root)
           .reject { |rel| rel.split('/').any? { |seg| %w[. ..].include?(seg) } }
           .map { |rel| [rel, File.join(root, rel)] }
           .select { |_rel, abs| File.file?(abs) }
      end
      raise MissingFiles, "Missing files for pattern '#{pattern}'" if hits.empty?

      hits.each { |rel, abs| matched[rel] ||= abs }
    end
    (spec['excluded_files'] || []).each do |pattern|
      matched.reject! { |rel, _| File.fnmatch?(pattern, rel, FLAGS) }
    end
    matched.sort.to_h
  end

  def self.stage(files, dir)
    files.each do |rel, abs|
      dest = File.join(dir, rel)
      FileUtils.mkdir_p(File.dirname(dest))
      FileUtils.cp(abs, dest, preserve: true)
    end
  end
end

if $PROGRAM_NAME == __FILE__
  release_dir, name, blobs_dir, stage_dir = ARGV
  abort 'usage: bosh_package.rb <release dir> <package> <blobs dir> [<stage dir>]' if name.nil? || blobs_dir.nil?
  begin
    files = BoshPackage.files(release_dir, name, blobs_dir)
  rescue BoshPackage::MissingFiles => e
    abort "package #{name}: #{e.message}"
  end
  BoshPackage.stage(files, stage_dir) if stage_dir
  puts files.keys
end
